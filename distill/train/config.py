"""The training stage's settings: one flat, validated model.

`TrainConfig` has the fields of the spec's `student` (what to train) and `training` (how long and how)
sections side by side: it is both sections, so each field is declared, with its bounds, default and
documentation, once, in `distill.spec`. Everything is checked before the first tokenizer merge or
training step, and every problem is reported at once, named by its spec key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, ValidationError, model_validator

from distill.errors import ConfigError, Problem
from distill.spec import Student, Training

if TYPE_CHECKING:
    from distill.spec import LoadedSpec

# Fields that change nothing about the trained weights: they may differ between a run and its resume.
RUNTIME_FIELDS = frozenset(
    {"eval_every", "eval_max_texts", "checkpoint_every", "keep_checkpoints", "log_every", "compile",
     "num_threads", "peak_flops", "report_to", "sharding"}
)

# The peak learning rate when the spec names none, by optimizer.
DEFAULT_LEARNING_RATE = {"muon": 4e-3, "adamw": 2e-3}


class TrainConfig(Training, Student):
    """How to train the student: the spec's `student` and `training` sections side by side (the fields
    of `Student` first), with what they settle together: the automatic optimizer and learning rate, and
    the combinations that cannot train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_automatic(cls, fields: Any) -> Any:
        """Settle `optimizer: auto` and the default learning rate, so the stored config says what ran.

        Muon takes the blocks' matrices when training from scratch (it reaches a given loss in fewer
        steps, and stands twice AdamW's learning rate); fine-tuning keeps the AdamW a base model was
        trained with, and so does sharded training."""
        if not isinstance(fields, dict):
            return fields
        fields = dict(fields)
        if fields.get("optimizer", "auto") == "auto":  # FSDP does not shard Muon (distill.train.sharding)
            from_scratch = fields.get("base_model") is None
            fields["optimizer"] = "muon" if from_scratch and fields.get("sharding") != "fsdp" else "adamw"
        if fields.get("learning_rate") is None:
            fields["learning_rate"] = DEFAULT_LEARNING_RATE.get(fields["optimizer"])
        return fields

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        # lora without base_model is refused by Student itself
        if self.sharding == "fsdp" and self.optimizer == "muon":
            raise ValueError("sharding fsdp needs optimizer adamw: Muon is not sharded (or use sharding ddp)")
        if self.sharding == "fsdp" and self.lora:
            raise ValueError("sharding fsdp does not shard LoRA training: use sharding ddp")
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

    def limits(self) -> tuple[int | None, int | None, float | None]:
        """(max_steps, max_tokens, max_minutes): `budget`'s when none is set, else the 10-minute default."""
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            if self.budget is not None:
                return None, self.budget.tokens, self.budget.minutes
            return None, None, 10.0
        return self.max_steps, self.max_tokens, self.max_minutes

    def weights_fingerprint_fields(self) -> dict[str, Any]:
        """The settings that decide the trained weights (everything but RUNTIME_FIELDS)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RUNTIME_FIELDS}


STUDENT_FIELDS = {name: f"student.{name}" for name in Student.model_fields}  # the rest are under `training:`


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
    """The spec's `student` and `training` sections as one TrainConfig; `student.base_model` is resolved
    against `spec_dir`. Problems are raised as one ConfigError, each named by its spec key."""
    student = dict(student)
    if student.get("base_model") is not None:
        student["base_model"] = (spec_dir / student["base_model"]).resolve()
    if student.get("tokenizer") not in (None, "own", "teacher"):  # a folder, relative to the spec
        student["tokenizer"] = str((spec_dir / Path(student["tokenizer"]).expanduser()).resolve())
    return make_train_config({**student, **training}, file=file)


def spec_train_config(loaded: LoadedSpec) -> TrainConfig:
    """The loaded spec's training settings: what `distill train` and `distill run` both train with."""
    spec = loaded.spec
    student = spec.student.model_dump(mode="json")
    if student["tokenizer"] == "teacher":
        student["tokenizer"] = teacher_tokenizer(loaded)
    return train_config_from_spec(student, spec.training.model_dump(mode="json"), spec_dir=loaded.directory,
                                  file=loaded.path)


def teacher_tokenizer(loaded: LoadedSpec) -> str:
    """`student.tokenizer: teacher` as a folder: a local (hf) teacher's own. An API teacher's tokenizer is not on
    this machine: the spec names the folder of the model its server serves."""
    teacher = loaded.spec.teacher
    if teacher.provider != "hf":
        raise ConfigError(Problem(f"student.tokenizer: teacher cannot find the tokenizer of a {teacher.provider} teacher",
                                  file=loaded.path, key="student.tokenizer",
                                  hint="give the folder of the teacher's model or bundle (the one `distill serve-model` "
                                       "or the OpenAI-compatible server loads), e.g. student.tokenizer: ../teacher/model; "
                                       "or use tokenizer: own to train on the teacher's text only"))
    return str((loaded.directory / Path(teacher.model).expanduser()).resolve())


def pinned_fields(loaded: LoadedSpec) -> set[str]:
    """The student and training fields the spec sets itself: a budget's plan chooses only the others."""
    return set(loaded.spec.student.model_fields_set) | set(loaded.spec.training.model_fields_set)


def make_train_config(fields: dict[str, Any], *, file: Path | None = None) -> TrainConfig:
    """Validate flat fields into a TrainConfig; a mistake raises ConfigError naming the spec key."""
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            key = STUDENT_FIELDS.get(field, f"training.{field}" if field else "student")
            key += "".join(f".{part}" for part in error["loc"][1:] if isinstance(part, str))
            problems.append(Problem(error["msg"], file=file, key=key))
        raise ConfigError(*problems) from None
