"""The training stage: tokenizer, student presets, data layout, the Accelerate loop, LoRA, sampling.

`train_student(examples, out_dir, config, kind=...)` is the entry point; `TrainConfig` its settings.
"""

from distill.train.config import TrainConfig, TrainResult, make_train_config, spec_train_config, train_config_from_spec
from distill.train.loop import train_student

__all__ = ["TrainConfig", "TrainResult", "make_train_config", "spec_train_config", "train_config_from_spec", "train_student"]
