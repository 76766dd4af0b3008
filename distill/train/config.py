"""The training stage's settings: one flat, validated model.

The task spec splits these over two sections, `student` (what to train) and `training` (how long and
how); `train_config_from_spec` flattens them. Everything is checked before the first tokenizer merge or
training step, and every problem is reported at once, named by its spec key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.errors import ConfigError, Problem

# Fields that change nothing about the trained weights: they may differ between a run and its resume.
RUNTIME_FIELDS = frozenset(
    {"eval_every", "eval_max_texts", "checkpoint_every", "keep_checkpoints", "log_every", "compile",
     "num_threads", "peak_flops", "report_to"}
)

# The peak learning rate when the spec names none, by optimizer.
DEFAULT_LEARNING_RATE = {"muon": 4e-3, "adamw": 2e-3}

# Flat field -> where it lives in the spec (the rest are under `training:`).
STUDENT_FIELDS = {
    "preset": "student.preset",
    "custom": "student.custom",
    "base_model": "student.base_model",
    "tokenizer_vocab": "student.tokenizer_vocab",
    "context_length": "student.context_length",
    "lora": "student.lora",
    "lora_r": "student.lora.r",
    "lora_alpha": "student.lora.alpha",
    "lora_dropout": "student.lora.dropout",
    "lora_target_modules": "student.lora.target_modules",
}


class TrainConfig(BaseModel):
    """How to train the student. Defaults train the `small` preset from scratch for 10 minutes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what to train ---
    preset: str = "small"  # a name in distill.train.presets.PRESETS, or "custom"
    custom: dict[str, Any] = Field(default_factory=dict)  # LlamaConfig fields, for preset "custom"
    base_model: Path | None = None  # a local model directory to fine-tune instead of training from scratch
    lora: bool = False  # with base_model: train LoRA adapters (True) or every weight (False)
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] | None = None  # None: every linear layer but the output head
    tokenizer_vocab: int = Field(4096, ge=256, le=65536)  # from scratch only; a base model brings its own
    context_length: int = Field(256, ge=16, le=8192)
    chat_template: str | None = None  # instruct: Jinja chat template; None: the base model's, else ours
    dropout: float = Field(0.0, ge=0, lt=1)  # attention dropout (a Llama block has no other); 0.1 on small data

    # --- optimisation ---
    batch_size: int = Field(16, gt=0)  # sequences per micro-batch per process
    grad_accum: int = Field(1, gt=0)  # micro-batches per optimizer step
    optimizer: Literal["auto", "adamw", "muon"] = "auto"  # auto: muon from scratch, adamw for a base model
    learning_rate: float | None = Field(None, gt=0)  # peak; None: 4e-3 with Muon, 2e-3 with AdamW. Fine-tuning
    #   a pretrained base wants ~1e-4 (full) to ~5e-4 (LoRA)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # the cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)  # on matrices only, never on norms and biases
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)

    # --- budget: training ends when the first one set runs out; none set means 10 minutes ---
    max_steps: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    max_minutes: float | None = Field(None, gt=0)

    # --- validation, checkpoints, logging ---
    val_fraction: float = Field(0.1, gt=0, lt=1)
    val_split: Literal["random", "tail"] = "random"  # tail: the last examples, in the order given
    eval_every: int = Field(100, gt=0)  # optimizer steps
    eval_max_texts: int | None = Field(None, gt=0)  # cap on validation texts for evals during training
    early_stopping_patience: int | None = Field(None, gt=0)  # evals without improvement before stopping
    checkpoint_every: int = Field(200, gt=0)  # optimizer steps
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(10, gt=0)

    # --- runtime ---
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where matmuls run natively in it (GPU or CPU)
    compile: bool = False  # torch.compile the forward and loss
    num_threads: int | None = Field(None, gt=0)  # CPU threads for torch; None: torch's default
    peak_flops: float | None = Field(None, gt=0)  # for MFU; None: measure the matmul peak at start
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # trackers, if installed

    @model_validator(mode="before")
    @classmethod
    def _resolve_automatic(cls, fields: Any) -> Any:
        """Settle `optimizer: auto` and the default learning rate, so the stored config says what ran.

        Muon takes the blocks' matrices when training from scratch (it reaches a given loss in fewer
        steps, and stands twice AdamW's learning rate); fine-tuning keeps the AdamW a base model was
        trained with."""
        if not isinstance(fields, dict):
            return fields
        fields = dict(fields)
        if fields.get("optimizer", "auto") == "auto":
            fields["optimizer"] = "muon" if fields.get("base_model") is None else "adamw"
        if fields.get("learning_rate") is None:
            fields["learning_rate"] = DEFAULT_LEARNING_RATE.get(fields["optimizer"])
        return fields

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.lora and self.base_model is None:
            raise ValueError("lora needs base_model (a local model directory)")
        if self.custom and self.preset != "custom":
            raise ValueError(f"custom architecture fields are only used with preset 'custom', not {self.preset!r}")
        missing = [name for name in self.report_to if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"report_to names trackers that are not installed: {', '.join(missing)} (pip install them)")
        if self.base_model is None:
            from distill.train.presets import PRESETS

            if self.preset != "custom" and self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)} or custom")
        return self

    @property
    def from_scratch(self) -> bool:
        return self.base_model is None

    def budget(self) -> tuple[int | None, int | None, float | None]:
        """(max_steps, max_tokens, max_minutes), with the 10-minute default when none is set."""
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            return None, None, 10.0
        return self.max_steps, self.max_tokens, self.max_minutes

    def weights_fingerprint_fields(self) -> dict[str, Any]:
        """The settings that decide the trained weights (everything but RUNTIME_FIELDS)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RUNTIME_FIELDS}


@dataclass(frozen=True)
class TrainResult:
    """What `train_student` produced. `model_dir` loads with plain transformers."""

    model_dir: Path
    steps: int
    tokens: int
    seconds: float  # wall-clock spent in the training loop, over all resumes
    stopped_by: str  # "max_steps" | "max_tokens" | "max_minutes" | "early_stopping"
    val_loss: float  # nats per token on the validation split, at the end
    val_bpb: float  # bits per UTF-8 byte on the validation split, at the end
    non_embedding_params: int
    trainable_params: int
    metrics_path: Path
    loss_curve_path: Path
    dataset_fingerprint: str = ""  # the examples trained on (lineage.examples_digest): names the signed-off data
    weights_sha256: str = ""  # the saved model (lineage.weights_digest): what eval and release must find


def train_config_from_spec(student: dict[str, Any], training: dict[str, Any], *, spec_dir: Path,
                           file: Path | None = None) -> TrainConfig:
    """Flatten the spec's `student` and `training` sections into a TrainConfig.

    `student.lora` is a mapping (r, alpha, dropout, target_modules) or null; `student.base_model` is
    resolved against `spec_dir`. Problems are raised as one ConfigError, each named by its spec key.
    """
    flat: dict[str, Any] = {k: v for k, v in student.items() if k != "lora"}
    lora = student.get("lora")
    if lora is not None:
        flat["lora"] = True
        flat.update({f"lora_{k}": v for k, v in lora.items()})
    if flat.get("base_model") is not None:
        flat["base_model"] = (spec_dir / flat["base_model"]).resolve()
    flat.update(training)
    return make_train_config(flat, file=file)


def make_train_config(fields: dict[str, Any], *, file: Path | None = None) -> TrainConfig:
    """Validate flat fields into a TrainConfig; a mistake raises ConfigError naming the spec key."""
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            key = STUDENT_FIELDS.get(field, f"training.{field}" if field else "student")
            problems.append(Problem(error["msg"], file=file, key=key))
        raise ConfigError(*problems) from None
