"""TrainConfig: flat fields, declared once in the spec's sections, validated up front, named by their spec keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.errors import ConfigError
from distill.evaluate.stage import EvalSettings
from distill.spec import Evaluation, Student, Training
from distill.train.config import TrainConfig, make_train_config, train_config_from_spec


def test_stage_settings_are_the_spec_sections_fields():
    """Each field is declared once (in distill.spec); the stages' flat settings carry the same field."""
    assert TrainConfig.model_fields.keys() == Student.model_fields.keys() | Training.model_fields.keys()
    for section in (Student, Training):
        for name, info in section.model_fields.items():
            assert (TrainConfig.model_fields[name].annotation, TrainConfig.model_fields[name].default) == \
                (info.annotation, info.default), name
    assert EvalSettings.model_fields.keys() == Evaluation.model_fields.keys() - {"judge", "rubric", "dimensions", "extra_texts"} | {"seed"}


def test_spec_sections_flatten():
    student = {"preset": "tiny", "base_model": "models/base", "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                                                                        "target_modules": None},
               "custom": {}, "tokenizer_vocab": 2048, "context_length": 128}
    config = train_config_from_spec(student, {"max_minutes": 5, "batch_size": 8}, spec_dir=Path("/specs"))
    assert config.base_model == Path("/specs/models/base") and config.lora.r == 4
    assert (config.max_minutes, config.batch_size, config.context_length) == (5, 8, 128)
    assert train_config_from_spec({"preset": "small", "lora": None}, {}, spec_dir=Path(".")).lora is None


def test_every_problem_is_reported_with_its_spec_key():
    with pytest.raises(ConfigError) as caught:
        make_train_config({"batch_size": 0, "context_length": 4, "lr": 1}, file=Path("spec.yaml"))
    keys = {p.key for p in caught.value.problems}
    assert keys == {"training.batch_size", "student.context_length", "training.lr"}
    assert all(str(p.file) == "spec.yaml" for p in caught.value.problems)
    with pytest.raises(ConfigError, match="Input should be 'tiny', 'small'"):  # the schema knows the presets
        make_train_config({"preset": "huge"})
    with pytest.raises(ConfigError, match="'lora' needs 'base_model'"):
        make_train_config({"lora": {"r": 4}})


def test_budget_defaults_to_ten_minutes_and_runtime_fields_do_not_change_weights():
    assert TrainConfig().limits() == (None, None, 10.0)
    assert TrainConfig(max_steps=5).limits() == (5, None, None)
    a = TrainConfig(compile=True, eval_every=7, num_threads=1).weights_fingerprint_fields()
    assert a == TrainConfig().weights_fingerprint_fields()
    assert a != TrainConfig(learning_rate=1e-3).weights_fingerprint_fields()


def test_optimizer_and_learning_rate_follow_what_is_trained():
    scratch = TrainConfig()
    assert (scratch.optimizer, scratch.learning_rate) == ("muon", 4e-3)
    fine_tune = TrainConfig(base_model=Path("/models/base"))
    assert (fine_tune.optimizer, fine_tune.learning_rate) == ("adamw", 2e-3)
    assert TrainConfig(optimizer="adamw").learning_rate == 2e-3
    assert (TrainConfig(learning_rate=1e-3).optimizer, TrainConfig(learning_rate=1e-3).learning_rate) == ("muon", 1e-3)
    # The spec's defaults (optimizer: auto, learning_rate: null) resolve the same way.
    from_spec = train_config_from_spec({"preset": "small", "lora": None}, {"optimizer": "auto", "learning_rate": None},
                                       spec_dir=Path("."))
    assert from_spec.weights_fingerprint_fields() == scratch.weights_fingerprint_fields()
    with pytest.raises(ConfigError) as caught:
        make_train_config({"optimizer": "sgd"})
    assert [p.key for p in caught.value.problems] == ["training.optimizer"]
