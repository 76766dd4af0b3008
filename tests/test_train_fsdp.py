"""Sharded training (FSDP2) on two CPU processes over gloo, with the harness of test_train_distributed,
and which launches shard at all.

Each process holds half of every weight, gradient and AdamW moment; the weights are gathered for each
block's forward and backward and the gradients reduce-scattered. Two processes with batch B each
train on the global batch one process does with 2B and end within TOLERANCE of its weights; a run
killed with SIGKILL resumes from its sharded checkpoint to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate import Accelerator

from distill.errors import ConfigError, RunDirError
from distill.train import TrainConfig
from distill.train.config import make_train_config
from distill.train.sharding import FSDP_CHECKPOINT, check_checkpoint_layout, wants_fsdp
from test_train_distributed import CONFIG, assert_matches_one_process, kill_and_resume, run_to_end

FSDP = {**CONFIG, "sharding": "fsdp"}
# As for DDP: the largest relative weight difference after 40 AdamW steps. Measured: 2.4e-6 (the
# gradients are reduce-scattered and the gradient norm summed over shards, in another order).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    return run_to_end(tmp_path_factory.mktemp("fsdp"), FSDP)


@pytest.mark.slow
def test_two_sharded_processes_match_one_at_the_same_global_batch(sharded_run, tmp_path):
    last = sharded_run / "checkpoints" / "step-00000040"
    assert (last / FSDP_CHECKPOINT).is_dir()  # really sharded: a distributed checkpoint, not DDP's file
    assert (last / "model.safetensors").is_file()  # and the gathered weights for samplers
    assert_matches_one_process(sharded_run, tmp_path, FSDP, TOLERANCE)


@pytest.mark.slow
def test_a_sharded_run_killed_with_sigkill_resumes_to_the_same_weights(sharded_run, tmp_path):
    kill_and_resume(tmp_path, sharded_run, FSDP)


@pytest.mark.parametrize("settings, processes, sharded", [
    ({"preset": "large", "optimizer": "adamw"}, 2, True),  # the larger presets shard by themselves
    ({"preset": "xl", "optimizer": "adamw"}, 8, True),
    ({"preset": "large"}, 2, False),  # Muon (the default from scratch) is not sharded
    ({"preset": "small", "optimizer": "adamw"}, 2, False),
    ({"preset": "large", "optimizer": "adamw"}, 1, False),  # one process never shards
    ({"preset": "large", "optimizer": "adamw", "sharding": "ddp"}, 2, False),
    ({"preset": "small", "sharding": "fsdp"}, 2, True),  # asked for: any full training
])
def test_which_launches_shard(settings, processes, sharded):
    assert wants_fsdp(TrainConfig(**settings), processes) is sharded


def test_asking_for_fsdp_picks_adamw_and_refuses_muon():
    assert TrainConfig(sharding="fsdp").optimizer == "adamw"
    with pytest.raises(ConfigError, match="sharding fsdp needs optimizer adamw"):
        make_train_config({"sharding": "fsdp", "optimizer": "muon"})


def test_a_sharded_checkpoint_does_not_resume_unsharded(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-00000008"
    (checkpoint / FSDP_CHECKPOINT).mkdir(parents=True)
    with pytest.raises(RunDirError, match="written by FSDP training") as caught:
        check_checkpoint_layout(Accelerator(cpu=True), checkpoint)
    assert "training.sharding" in str(caught.value)
