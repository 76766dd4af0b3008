"""The task spec: the customer's whole order, as a typed schema.

A spec is YAML. `load_spec` parses it safely, validates it against the pydantic models below (unknown
keys rejected, nearest valid key suggested), and reports every problem at once with file, line, column
and key path. Checks that need the files a spec names (word lists, rows files, templates) live in
`distill.validate`. Adding a field to a section is one line here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, create_model, model_validator

from distill.errors import Problem, SpecError
from distill.located_yaml import LocatedDocument, dotted_key, load_located_yaml

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Scalar = Union[str, int, float]


MAX_RECORDS = 10_000_000  # a dataset larger than this is a typo, not an order (`distill.cli.params` repeats it)
MAX_INTEGER = 2**53  # every integer the spec holds stays exact as a JSON number and fits the libraries' C types


@dataclass(frozen=True)
class PathRef:
    """Marks a spec field that names a file or folder on disk (`distill.spec_refs` finds them all).

    kind: "file" (a file or folder next to the spec), "template" (inline template text, or a template
    file looked up in templates_dir and the built-in templates), "named" (a shipped name under `shipped`,
    or a file next to the spec), "replay" (a file next to the spec, or a hub dataset id), "model" (a local
    model directory; on the service, one inside the upload). `local_only`: the CLI confines it to the
    spec's folder too (the service confines every path)."""

    kind: Literal["file", "template", "named", "replay", "model"]
    local_only: bool = False
    shipped: str | None = None
    """for "named": the folder under safety/ holding the shipped names"""
    suffix: str = ".yaml"
    """for "named": what a shipped name's file ends with"""


SpecFile = Annotated[str, PathRef("file", local_only=True)]
SpecTemplate = Annotated[str, PathRef("template", local_only=True)]


class Strict(BaseModel):
    # No NaN or infinity in any number, and no integer past MAX_INTEGER: each would pass `ge`/`le`-free
    # fields and fail later, deep in a stage, as a traceback.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _integers_in_range(cls, data: Any) -> Any:
        for key, value in (data.items() if isinstance(data, dict) else ()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
                raise ValueError(f"{key}: {value} is out of range (at most {MAX_INTEGER:,} either way)")
        return data


# --- variables: sampled per record, deterministically from (seed, record index, variable name) ---


class ChoiceVariable(Strict):
    """One item, uniformly, from an inline list or a word-list file (one item per line, `#` comments)."""

    type: Literal["choice"]
    items: list[Scalar] | None = None
    file: SpecFile | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ChoiceVariable":
        if (self.items is None) == (self.file is None):
            raise ValueError("give exactly one of 'items' or 'file'")
        if self.items is not None and not self.items:
            raise ValueError("'items' is empty")
        return self


class WeightedVariable(Strict):
    """One item, with probability proportional to its weight: `weights: {happy: 3, sad: 1}`."""

    type: Literal["weighted"]
    weights: dict[str, Annotated[float, Field(gt=0)]] = Field(min_length=1)


class SubsetVariable(Strict):
    """A random subset of `min`..`max` items, in list order (TinyStories' story features)."""

    type: Literal["subset"]
    items: list[str] = Field(min_length=1)
    min: Annotated[int, Field(ge=0)] = 0
    max: Annotated[int, Field(ge=0)] | None = None
    """default: all items"""
    order: Literal["listed", "random"] = "listed"
    """random: the chosen items in a random order"""

    @model_validator(mode="after")
    def _bounds(self) -> "SubsetVariable":
        top = len(self.items) if self.max is None else self.max
        if not self.min <= top <= len(self.items):
            raise ValueError(f"need 0 <= min <= max <= {len(self.items)} (the number of items), got min={self.min} max={top}")
        return self


class RangeVariable(Strict):
    """An integer from `min` to `max`, both included."""

    type: Literal["range"]
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> "RangeVariable":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RowsVariable(Strict):
    """Values read row by row from a local JSONL or CSV file (e.g. real user inputs).

    `order: sequential` gives record i the row i mod n; `random` picks a row per record.
    Without `column` the whole row (a mapping) is the value.
    """

    type: Literal["rows"]
    file: SpecFile
    column: str | None = None
    order: Literal["sequential", "random"] = "sequential"


Variable = Annotated[
    Union[ChoiceVariable, WeightedVariable, SubsetVariable, RangeVariable, RowsVariable],
    Field(discriminator="type"),
]


# --- steps: prompts run in sequence per record ---


class Step(Strict):
    """One teacher call. `system`/`user` are template files (`*.j2`, `*.jinja`) or inline template text.

    Templates see the record's variables, `record_index`, and `steps.<name>` for earlier outputs
    (parsed JSON for json steps).
    """

    name: Identifier
    """The step's name; later templates read its output as steps.<name>."""
    system: SpecTemplate | None = None
    """The system message: a template file or inline template text; None: no system message."""
    user: SpecTemplate
    """The user message: a template file or inline template text."""
    output: Literal["text", "json"] = "text"
    """text, or json (parsed, and checked against json_schema when one is given)."""
    json_schema: dict[str, Any] | SpecFile | None = None
    """inline schema, or a .json file next to the spec"""
    params: dict[str, Any] = Field(default_factory=dict)
    """overrides teacher.params for this step"""

    @model_validator(mode="after")
    def _schema_only_for_json(self) -> "Step":
        if self.output == "json" and self.json_schema is None:
            raise ValueError("a json step needs 'json_schema'")
        if self.output == "text" and self.json_schema is not None:
            raise ValueError("'json_schema' is only allowed with output: json")
        return self


# --- chat: a conversation between a simulated user, the assistant (the student's role) and tools ---


class ToolFunction(Strict):
    """A function the assistant may call, as in OpenAI's `tools` list."""

    name: Identifier
    """The function's name, as the assistant calls it."""
    description: str = ""
    """What the function does; shown to the teacher and, through the chat template, to the student."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """The JSON Schema of the call's arguments; every call the teacher writes is checked against it."""


class ToolResult(Strict):
    """How a simulated tool answers a call: a template, a rows file, or a teacher step (exactly one)."""

    template: SpecTemplate | None = None
    """A template rendered with `arguments` (the call's), the record's variables and `steps`; its text is the result."""
    rows: SpecFile | None = None
    """A JSONL file of results: the row whose `match` column equals the argument of the same name, as JSON."""
    match: str | None = None
    """For rows: the argument (and column) that selects the row."""
    missing: str = '{"error": "not found"}'
    """For rows: the result when no row matches."""
    teacher: SpecTemplate | None = None
    """A template of a request to the teacher, which then plays the tool (sees `arguments`); its answer is the result."""

    @model_validator(mode="after")
    def _one_source(self) -> "ToolResult":
        given = [name for name in ("template", "rows", "teacher") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'template', 'rows' or 'teacher'")
        if (self.rows is None) != (self.match is None):
            raise ValueError("'rows' and 'match' go together")
        return self


class ChatTool(Strict):
    """One tool in OpenAI's `tools` format, with how the simulation answers its calls."""

    type: Literal["function"] = "function"
    """Always function, as in OpenAI's format."""
    function: ToolFunction
    """The function's name, description and argument schema."""
    result: ToolResult
    """How the simulated tool answers."""


class TurnRange(Strict):
    """A number of user turns drawn per record, from `min` to `max` (both included)."""

    min: PositiveInt
    """The fewest user turns."""
    max: PositiveInt
    """The most user turns."""

    @model_validator(mode="after")
    def _ordered(self) -> "TurnRange":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Chat(Strict):
    """A conversation per record (kind: chat). The simulated user is a teacher step (`user_step`, rendered
    again for each user turn with `turn` and `history`); the teacher plays the assistant, whose every move
    is a reply or a tool call; tools are answered by their `result`. Records are OpenAI-style message lists."""

    user_step: Identifier
    """The step that writes the user's message; steps before it run once per record (a scenario, a persona)."""
    system: SpecTemplate | None = None
    """The assistant's system message (kept in the record, so the student sees it); None: none."""
    assistant: SpecTemplate | None = None
    """Extra instructions for the teacher playing the assistant (not kept in the record)."""
    turns: PositiveInt | TurnRange = 1
    """User turns per conversation: a number, or {min, max} drawn per record."""
    max_tool_calls: Annotated[int, Field(ge=0, le=16)] = 3
    """Tool calls the assistant may make in one turn before it must reply."""
    tools: list[ChatTool] = Field(default_factory=list)
    """Tools the assistant may call (OpenAI's format) and their simulated results."""
    reply_schema: dict[str, Any] | SpecFile | None = None
    """The JSON Schema of the assistant's replies (inline, or a .json file next to the spec); None: free text."""
    stop: Literal["turns", "reply_matches"] = "turns"
    """turns: the conversation ends after its user turns; reply_matches: also as soon as a reply matches `stop_pattern`."""
    stop_pattern: str | None = None
    """For stop: reply_matches, a regular expression searched in each assistant reply."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Overrides teacher.params for the assistant's moves."""

    @model_validator(mode="after")
    def _stop_pattern(self) -> "Chat":
        if (self.stop == "reply_matches") != (self.stop_pattern is not None):
            raise ValueError("stop: reply_matches needs 'stop_pattern', and only it may have one")
        if self.stop_pattern is not None:
            try:
                re.compile(self.stop_pattern)
            except re.error as exc:
                raise ValueError(f"stop_pattern is not a valid regular expression: {exc}") from None
        names = [tool.function.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        return self


# --- the teacher ---


class RateLimit(Strict):
    rpm: PositiveInt | None = None
    """requests per minute"""
    tpm: PositiveInt | None = None
    """tokens (prompt + completion) per minute"""


class GenerationParams(Strict):
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    """Sampling temperature (0: greedy)."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling: the smallest share of probability mass to sample from."""
    max_tokens: PositiveInt = 1024
    """Longest answer, in the teacher's tokens."""
    seed: int | None = None
    """The provider's sampling seed, where it has one."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end the answer."""


class ReplaySource(Strict):
    """Recorded teacher outputs: JSONL, CSV, Parquet, a plain text file split by `separator`, a
    `datasets` dataset saved to disk, or a hub dataset id (where the network allows)."""

    path: Annotated[str, PathRef("replay")]
    """A file or folder next to the spec, or a hub dataset id."""
    match: Literal["index", "prompt"] = "index"
    """index: record i gets recorded answer i; prompt: the answer whose prompt equals the record's last user message."""
    column: str = "text"
    """The column holding the answer (JSONL, CSV, Parquet, datasets)."""
    separator: str = "<|endoftext|>"
    """for plain text files"""
    split: str = "train"
    """for hub datasets"""


class Teacher(Strict):
    provider: Literal["openai", "anthropic", "hf", "replay", "offline"]
    """openai (or any OpenAI-compatible server with base_url), anthropic, hf (a local transformers model), replay
    (recorded outputs) or offline (the no-network stand-in)."""
    model: str = Field(min_length=1)
    """The model name the provider knows (for hf: a local folder or hub id)."""
    base_url: str | None = None
    """any OpenAI-compatible server: vLLM, llama.cpp, Ollama, gateways"""
    api_key_env: str | None = None
    """environment variable holding the key; the key never enters a file"""
    params: GenerationParams = Field(default_factory=GenerationParams)
    """Generation settings for every step (a step's params override them)."""
    concurrency: PositiveInt = 8
    """Requests in flight at once."""
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    """Requests and tokens per minute the provider allows."""
    max_cost_usd: Annotated[float, Field(gt=0)] | None = None
    """Spending cap for the run in USD: generation stops before a request would pass it."""
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    """Seconds one request may take before it is retried."""
    max_retries: Annotated[int, Field(ge=0)] = 6
    """Retries of a failed request (with backoff) before the record is left for the next run."""
    max_retry_wait_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    """longest Retry-After obeyed; past it the request fails"""
    replay: ReplaySource | None = None
    """For provider replay: where the recorded outputs are and how they match records."""

    @model_validator(mode="after")
    def _replay_source(self) -> "Teacher":
        if (self.provider == "replay") != (self.replay is not None):
            raise ValueError("provider 'replay' needs a 'replay' section, and only it may have one")
        return self


class JudgeRef(Strict):
    """A judge model reached through the provider layer (defaults to the teacher)."""

    provider: Literal["openai", "anthropic", "hf", "offline"]
    """The judge's provider (as teacher.provider, without replay)."""
    model: str = Field(min_length=1)
    """The judge's model name."""
    base_url: str | None = None
    """Any OpenAI-compatible server for the judge."""
    api_key_env: str | None = None
    """Environment variable holding the judge's key; the key never enters a file."""


# --- later stages: small now, extended a line at a time ---


class Safety(Strict):
    policy: Annotated[str, PathRef("named", local_only=True, shipped="")] = "general"
    """a name under safety/, or a policy YAML inside the spec's folder"""
    judge: JudgeRef | None = None
    """None: the teacher judges, when the policy enables the judge"""
    decontaminate: list[Annotated[str, PathRef("file")]] = Field(default_factory=list)
    """extra files whose n-grams must not be trained on"""


# --- the student, its training and its evaluation: declared once here. `distill.train.TrainConfig` is
# Student and Training side by side (by inheritance) and `distill.evaluate.EvalSettings` a flat view of
# Evaluation (`flat_settings`), so the spec key, its type, bounds, default and docstring live in one
# place. A field's docstring is its description in `distill schema` and in editors. ---


class Lora(Strict):
    r: PositiveInt = 8
    """Rank of the adapters."""
    alpha: PositiveInt = 16
    """Scale of the adapters' update (alpha / r)."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Dropout on the adapters' input."""
    target_modules: list[str] | None = None
    """None: every linear layer but the output head (peft's "all-linear")"""


PRESET_NAMES = ("tiny", "small", "medium", "large", "xl", "custom")  # distill.train.presets.PRESETS, and custom


class Student(Strict):
    """What to train. Defaults train the `small` preset from scratch."""

    preset: Literal[PRESET_NAMES] = "small"
    """a preset of distill.train.presets, or "custom\""""
    base_model: Annotated[Path, PathRef("model")] | None = None
    """a local model directory to fine-tune instead of training from scratch (on the service: a folder inside the
    upload)"""
    lora: Lora | None = None
    """with base_model: train LoRA adapters; null: every weight (full fine-tune)"""
    custom: dict[str, Any] = Field(default_factory=dict)
    """LlamaConfig fields, for preset: custom"""
    tokenizer_vocab: Annotated[int, Field(ge=256, le=65536)] = 4096
    """from scratch only; a base model brings its own"""
    context_length: Annotated[int, Field(ge=16, le=8192)] = 256
    """Tokens per training sequence, and the longest context the student serves."""
    chat_template: str | None = None
    """instruct: a Jinja chat template; None: the base model's, else distill's"""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """attention dropout (a Llama block has no other); 0.1 on small data"""
    tokenizer: str = "own"
    """own: a BPE trained on the task's text; teacher: the teacher's tokenizer (an hf teacher's folder), needed to
    learn the teacher's token distribution (training.distillation); or a path to a tokenizer folder, a saved model or
    a released bundle folder (e.g. the one `distill serve-model` serves as the teacher)"""

    @model_validator(mode="after")
    def _lora_needs_base(self) -> "Student":
        if self.lora is not None and self.base_model is None:
            raise ValueError("'lora' needs 'base_model' (a local model directory)")
        return self


class TrainingBudget(Strict):
    """The compute the student may use: the preset, vocabulary and regularisers the spec does not pin are
    chosen for it from a short measurement of this machine (distill.train.budget)."""

    minutes: Annotated[float, Field(gt=0)] | None = None
    """wall-clock training time"""
    tokens: PositiveInt | None = None
    """training tokens, whatever the machine's speed"""

    @model_validator(mode="after")
    def _one_unit(self) -> "TrainingBudget":
        if (self.minutes is None) == (self.tokens is None):
            raise ValueError("give exactly one of minutes or tokens, e.g. {minutes: 10}")
        return self


class Preference(Strict):
    """Preference tuning after the supervised stage, on the signed-off pairs made from the review
    (`distill review RUN pairs make`), with the supervised student as the frozen reference."""

    method: Literal["dpo"] = "dpo"
    """dpo: direct preference optimisation (Rafailov et al. 2023), written in distill's own loop"""
    beta: Annotated[float, Field(gt=0)] = 0.1
    """How far the tuned student may move from the reference: larger keeps it closer."""
    learning_rate: Annotated[float, Field(gt=0)] = 1e-4
    """AdamW's learning rate, constant after a short warm-up."""
    steps: PositiveInt = 100
    """Optimizer steps over the pairs."""
    batch_size: PositiveInt = 8
    """Pairs per optimizer step."""
    checkpoint_every: PositiveInt = 50
    """optimizer steps"""
    log_every: PositiveInt = 5
    """Optimizer steps between rows of train/preference/metrics.jsonl."""
    nll_weight: Annotated[float, Field(ge=0)] = 0.0
    """Adds the chosen texts' language-model loss (nats per token) times this to DPO's (RPO, Pang et al. 2024):
    keeps the student's likelihood of good text from falling while it learns what to avoid. 0: plain DPO."""
    eval_prompts: PositiveInt = 50
    """Held-out prompts of the rejected kinds the evaluation samples, before and after tuning."""
    eval_samples: PositiveInt = 4
    """Samples per held-out prompt, before and after tuning."""
    max_bpb_increase: Annotated[float, Field(ge=0)] = 0.05
    """The held-out bits per byte may rise by at most this after tuning (eval reports it; the release gate refuses more)."""
    require_improvement: bool = False
    """The release gate also refuses when the rejected behaviour's rate did not fall (its 95% interval excludes no change)."""
    seed: int = 0
    """Seeds the order of the pairs."""


class Distillation(Strict):
    """Learn the teacher's next-token distribution beside its text: cross-entropy on the teacher's tokens plus
    `weight` x KL to its top-k distribution (renormalised with a tail bucket for the remaining mass) at
    `temperature`. Needs a teacher that returns log-probabilities (openai or OpenAI-compatible, hf) and the
    teacher's tokenizer (student.tokenizer: teacher); otherwise training falls back to text only and says so."""

    weight: Annotated[float, Field(ge=0, le=100)] = 5.0
    """the KL term's weight beside the cross-entropy (docs/training.md has the measured choice)"""
    temperature: Annotated[float, Field(gt=0, le=10)] = 1.0
    """softens both distributions in the KL term (scaled by temperature^2)"""
    top_k: Annotated[int, Field(ge=1, le=20)] = 20
    """alternatives per token asked of the teacher (OpenAI-compatible servers give at most 20)"""


class Training(Strict):
    """How the student trains. Training ends when the first budget set runs out; none set means 10 minutes."""

    budget: TrainingBudget | None = None
    """plan the student for this compute; replaces max_minutes / max_tokens"""

    max_steps: PositiveInt | None = None
    """optimizer steps"""
    max_tokens: PositiveInt | None = None
    """Training tokens seen, over all processes."""
    max_minutes: Annotated[float, Field(gt=0)] | None = None
    """wall-clock"""
    batch_size: PositiveInt = 16
    """sequences per micro-batch per process"""
    grad_accum: PositiveInt = 1
    """micro-batches per optimizer step"""
    optimizer: Literal["auto", "adamw", "muon"] = "auto"
    """auto: muon from scratch, adamw for a base model"""
    learning_rate: Annotated[float, Field(gt=0)] | None = None
    """peak; None: 4e-3 with muon, 2e-3 with adamw. Fine-tuning a pretrained base wants ~1e-4 (full) to ~5e-4 (LoRA)"""
    muon_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95
    """Muon's momentum."""
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """the cosine decays to learning_rate * min_lr_ratio"""
    warmup_steps: Annotated[int, Field(ge=0)] = 50
    """Optimizer steps of linear warm-up to the peak learning rate."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    """on matrices only, never on norms and biases"""
    adam_beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """AdamW's first-moment decay."""
    adam_beta2: Annotated[float, Field(ge=0, lt=1)] = 0.95
    """AdamW's second-moment decay."""
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    """Largest gradient norm; larger gradients are scaled down to it."""
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Exponential moving average of the weights, updated after every step (the first steps average faster: decay
    min(ema_decay, (1 + n) / (10 + n))). With it, validation scores and the released model are the average's;
    checkpoints keep both. None: the last weights as they are."""
    token_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """share of input tokens replaced by random ones"""
    eval_every: PositiveInt = 100
    """optimizer steps"""
    eval_max_texts: PositiveInt | None = 256
    """Cap on validation texts for evals during training (the final one scores them all): a whole split of 2,000
    stories every 100 steps took a third of a run's time. None: no cap."""
    early_stopping_patience: PositiveInt | None = None
    """evals without improvement before stopping"""
    checkpoint_every: PositiveInt = 200
    """optimizer steps"""
    keep_checkpoints: PositiveInt = 2
    """Checkpoints kept on disk (the newest)."""
    log_every: PositiveInt = 10
    """Optimizer steps between rows of metrics.jsonl."""
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    """Share of the reviewed records held out for validation."""
    val_split: Literal["random", "tail"] = "random"
    """tail: the last examples, in the order given"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 where matmuls run natively in it (GPU or CPU)"""
    compile: bool = False
    """torch.compile the forward and loss"""
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"
    """several processes: fsdp splits weights, gradients and optimizer state across them; auto: fsdp for the large and
    xl presets with adamw, else ddp"""
    num_threads: PositiveInt | None = None
    """CPU threads for torch; None: torch's default"""
    peak_flops: Annotated[float, Field(gt=0)] | None = None
    """for MFU; None: measure the matmul peak at start"""
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    """trackers, if installed"""
    seed: int = 0
    """Seeds initialisation, shuffling and the validation split."""
    preference: Preference | None = None
    """Preference tuning (DPO) on the review's signed-off pairs after the supervised stage; None: none."""


    distillation: Distillation | None = None
    """learn the teacher's token probabilities too; None: its text only"""

    @model_validator(mode="after")
    def _one_budget(self) -> "Training":
        if self.budget is not None and (self.max_minutes or self.max_tokens or self.max_steps):
            raise ValueError("budget replaces max_minutes, max_tokens and max_steps: set one or the other")
        return self


class Evaluation(Strict):
    judge: JudgeRef | None = None
    """None: the teacher grades"""
    prompts: PositiveInt = 50
    """held-out beginnings (or instruct inputs) to complete and grade"""
    samples_per_prompt: PositiveInt = 3
    """completions per beginning"""
    max_new_tokens: PositiveInt = 256
    """longest student completion"""
    temperature: Annotated[float, Field(ge=0)] = 0.8
    """sampling temperature of the student's completions"""
    probe_samples: PositiveInt = 3
    """completions per safety probe"""
    probe_sets: list[Annotated[str, PathRef("named", shipped="probes", suffix=".jsonl")]] | None = None
    """names under safety/probes/ or .jsonl paths; None: story (text), instruct (instruct)"""
    judge_concurrency: PositiveInt = 8
    """judge requests in flight"""
    batch_size: PositiveInt = 8
    """sequences per forward pass when scoring and sampling"""
    bpb_texts: PositiveInt | None = None
    """cap on held-out texts scored for bits per byte; None: all"""
    rubric: Annotated[str, PathRef("template")] | None = None
    """a template replacing templates/eval's grading rubric"""
    dimensions: dict[Identifier, str] | None = None
    """the judge's 0-10 grades for this task: name -> what a 10 looks like; None: story grades (text), general ones
    (instruct)"""
    extra_texts: list[Annotated[str, PathRef("file")]] = Field(default_factory=list)
    """more held-out text files for bits per byte"""


def flat_settings(name: str, module: str, doc: str, *sections: type[BaseModel], exclude: frozenset[str] = frozenset(),
                  rules: type[BaseModel] | None = None, **extra: Any) -> type[BaseModel]:
    """A frozen model with the fields of `sections` side by side (less `exclude`, plus `extra` given as
    (type, default)): a stage's flat settings, derived from the spec sections that declare them.
    `rules` (a model without fields) brings validators and methods."""
    fields: dict[str, Any] = {field: (info.annotation, info) for section in sections
                              for field, info in section.model_fields.items() if field not in exclude}
    if rules is None:
        model = create_model(name, __config__=ConfigDict(extra="forbid", frozen=True), __module__=module, **fields, **extra)
    else:
        model = create_model(name, __base__=rules, __module__=module, **fields, **extra)
    model.__doc__ = doc
    return model


class Release(Strict):
    version: str = Field(default="0.1.0", pattern=r"^[0-9A-Za-z][0-9A-Za-z.+-]*$")
    """The bundle's version: letters, digits, '.', '+' and '-'."""
    license: str = "apache-2.0"
    """The license the weights ship under (a name under templates/release/licenses)."""
    min_scores: dict[str, float] = Field(default_factory=dict)
    """e.g. {grammar: 6.0, bpb_max: 1.2}"""
    formats: list[Literal["safetensors", "onnx", "int8", "gguf"]] = Field(default_factory=lambda: ["safetensors"])
    """Forms in the bundle besides the safetensors weights, each checked against them (distill.release.parity)."""
    parity: dict[Literal["onnx", "int8", "gguf"], Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=dict)
    """The largest relative bits-per-byte delta vs safetensors each form may show (defaults: 1%, int8 5%)."""


class ColdStart(Strict):
    """How real inputs (captured from a served student) feed the next run: `distill coldstart`."""

    input_step: Identifier
    """the step that simulates the user's input; real inputs replace its output"""
    input_pattern: str | None = None
    """A regex with named groups that reads the step's output (group named like the step) and variables out of what
    the student was sent; without one, the whole user message is the step's output."""
    defaults: dict[Identifier, str] = Field(default_factory=dict)
    """variables later steps need, if not parsed"""
    real_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """share of real-input records in the next dataset"""
    held_out: float = Field(default=0.3, gt=0.0, lt=1.0)
    """share of real inputs kept for comparing v1 and v2"""
    start: Literal["scratch", "continue"] = "scratch"
    """v2 trains from scratch, or continues from v1's weights"""


class Spec(Strict):
    """A customer's task spec."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    """The task's name: lower case, digits, '.', '_' and '-'; names the run folder and the release."""
    description: str = ""
    """What the student is for, in a sentence; shown in the model and dataset cards."""
    kind: Literal["text", "instruct", "chat"]
    """text: the student continues text (stories); instruct: it answers an input (student_input); chat: it plays the
    assistant in conversations (see `chat`)."""
    records: Annotated[int, Field(gt=0, le=MAX_RECORDS)]
    """How many records the teacher writes."""
    seed: int = 0
    """Seeds the variables' sampling, the splits and training: the same seed gives the same prompts."""
    templates_dir: SpecFile | None = None
    """extra template folder next to the spec, searched before built-ins"""
    variables: dict[Identifier, Variable] = Field(default_factory=dict)
    """Randomised variables, sampled per record from (seed, record index, name)."""
    steps: list[Step] = Field(min_length=1)
    """The teacher calls that build one record, in order; later steps see earlier outputs."""
    student_input: SpecTemplate | None = None
    """instruct: template of what the student sees"""
    student_target: Identifier | None = None
    """the step whose output the student learns (default: the last)"""
    teacher: Teacher
    """The model that writes the dataset (and judges, unless safety.judge names another)."""
    safety: Safety = Field(default_factory=Safety)
    """The review: the policy, the judge and the files to decontaminate against."""
    student: Student = Field(default_factory=Student)
    """What to train: the preset, tokenizer and context, or a base model to fine-tune."""
    training: Training = Field(default_factory=Training)
    """How the student trains: budget, optimizer, schedule, regularisers, checkpoints."""
    evaluation: Evaluation = Field(default_factory=Evaluation)
    """How the student is evaluated: held-out bits per byte, judge grades and safety probes."""
    release: Release = Field(default_factory=Release)
    """The release bundle: version, license and the scores it must reach."""
    coldstart: ColdStart | None = None
    """How real inputs captured from a served student feed the next run (`distill coldstart`)."""
    chat: Chat | None = None
    """kind: chat: the simulated user, the assistant, the turns, the tools and when a conversation stops."""

    @model_validator(mode="after")
    def _consistent(self) -> "Spec":
        names = [step.name for step in self.steps]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"step names must be unique, repeated: {', '.join(repeated)}")
        if self.kind == "instruct" and not self.student_input:
            raise ValueError("an instruct spec needs 'student_input' (the template of what the student sees)")
        if self.kind != "instruct" and self.student_input:
            raise ValueError("'student_input' is only for kind: instruct")
        if (self.kind == "chat") != (self.chat is not None):
            raise ValueError("kind: chat needs a 'chat' section, and only it may have one")
        if self.chat is not None and self.chat.user_step not in names:
            raise ValueError(f"chat.user_step {self.chat.user_step!r} is not a step name ({', '.join(names)})")
        if self.coldstart is not None and self.coldstart.input_step not in names[:-1]:
            raise ValueError(f"coldstart.input_step {self.coldstart.input_step!r} must name a step before the last "
                             f"({', '.join(names[:-1]) or 'this spec has one step'})")
        if self.student_target is not None and self.student_target not in names:
            raise ValueError(f"student_target {self.student_target!r} is not a step name ({', '.join(names)})")
        return self

    @property
    def target_step(self) -> str:
        """The step whose output the student learns."""
        return self.student_target or self.steps[-1].name


class LoadedSpec(typing.NamedTuple):
    """A validated spec with where it came from: relative paths in it resolve against `directory`."""

    spec: Spec
    path: Path
    document: LocatedDocument

    @property
    def directory(self) -> Path:
        return self.path.parent

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def load_spec(path: str | Path) -> LoadedSpec:
    """Parse and validate a spec file. Raises SpecError listing every problem, located."""
    path = Path(path)
    document = load_located_yaml(path)
    if not isinstance(document.data, dict):
        raise SpecError(Problem("a spec must be a mapping of keys (name, kind, records, steps, teacher, ...)", file=path, line=1, column=1))
    try:
        spec = Spec.model_validate(document.data)
    except ValidationError as exc:
        raise SpecError(*located_problems(exc, document, Spec)) from None
    return LoadedSpec(spec, path, document)


def spec_json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "distill task spec"
    return schema


# --- turning pydantic errors into located problems ---


def located_problems(exc: ValidationError, document: LocatedDocument, root: type[BaseModel]) -> list[Problem]:
    """A pydantic error on a YAML document (validated as `root`) as located problems in file order,
    with the nearest valid key suggested for an unknown one."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = _data_path(error["loc"], document.data)
        hint = None
        if error["type"] == "extra_forbidden":
            message = "unknown key"
            known = _known_keys(root, loc[:-1], document.data)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else (f"valid keys: {', '.join(known)}" if known else None)
            line, column = document.locate(loc, prefer_key=True)
        elif error["type"] == "missing":
            message = "required key is missing"
            line, column = document.locate(loc[:-1])
        else:
            message = _plain_message(error)
            line, column = document.locate(loc)
        problems.append(Problem(message, file=document.file, line=line, column=column, key=dotted_key(loc) or None, hint=hint))
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _data_path(loc: tuple, data: Any) -> tuple:
    """Drop the union tags pydantic inserts (e.g. 'choice', 'function-after[...]') from an error path."""
    path: list = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif not isinstance(node, (dict, list)) or isinstance(part, str) and ("[" in part or part in _VARIABLE_TAGS):
            continue
        else:
            path.append(part)  # a missing key: keep it so the message names it
            node = None
    return tuple(path)


_VARIABLE_TAGS = {"choice", "weighted", "subset", "range", "rows"}


def _plain_message(error: dict) -> str:
    message = error["msg"]
    message = re.sub(r"^Value error, ", "", message)
    message = message.replace("Input should be greater than", "must be >").replace("Input should be", "must be")
    return message


def _known_keys(model: type[BaseModel], parent: tuple, data: Any) -> list[str]:
    """The field names valid at `parent` (walking models, lists, dicts and tagged unions)."""
    node_type: Any = model
    node_data = data
    for part in parent:
        node_type, node_data = _step_into(node_type, part, node_data)
        if node_type is None:
            return []
    models = [t for t in _unwrap(node_type, node_data) if isinstance(t, type) and issubclass(t, BaseModel)]
    return sorted(models[0].model_fields) if models else []


def _step_into(node_type: Any, part: Any, node_data: Any) -> tuple[Any, Any]:
    child_data = node_data.get(part) if isinstance(node_data, dict) else (
        node_data[part] if isinstance(node_data, list) and isinstance(part, int) and part < len(node_data) else None)
    for candidate in _unwrap(node_type, node_data):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and part in candidate.model_fields:
            return candidate.model_fields[part].annotation, child_data
        origin = typing.get_origin(candidate)
        if origin is list and isinstance(part, int):
            return typing.get_args(candidate)[0], child_data
        if origin is dict and isinstance(part, str):
            return typing.get_args(candidate)[1], child_data
    return None, None


def _unwrap(node_type: Any, node_data: Any) -> list[Any]:
    """Flatten Annotated/Optional/Union; pick a tagged union's member by the data's `type`."""
    origin = typing.get_origin(node_type)
    if origin is Annotated:
        return _unwrap(typing.get_args(node_type)[0], node_data)
    if origin in (Union, types.UnionType):
        members = [m for arg in typing.get_args(node_type) for m in _unwrap(arg, node_data)]
        tag = node_data.get("type") if isinstance(node_data, dict) else None
        tagged = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel) and "type" in m.model_fields
                  and typing.get_args(m.model_fields["type"].annotation) == (tag,)]
        return tagged or members
    return [node_type]
