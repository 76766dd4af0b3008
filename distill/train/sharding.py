"""How `distill train` spreads over the processes of `accelerate launch`: DDP or FSDP.

DDP keeps the whole model, its gradients and its optimizer state on every process and averages the
gradients. FSDP (torch's FSDP2, `fully_shard`, through Accelerate's plugin) splits all three across the
processes, each decoder block a unit whose weights are gathered for its forward and backward and freed
after, so a student too big for one device's memory trains on several. `training.sharding` chooses:
`auto` shards the larger presets (`large`, `xl`) trained with AdamW, `fsdp` shards any full training,
`ddp` never shards. One process never shards.

With FSDP no process holds the whole model, so evaluation runs on every process (each gathers the
blocks in turn) and the released weights and each checkpoint's `model.safetensors` are gathered first.
Checkpoints hold the sharded state as torch distributed checkpoints (`pytorch_model_fsdp_0/`,
`optimizer_0/`), which resume exactly on the same number of processes.

Muon is not sharded: it runs beside AdamW as a second optimizer of the same model, and Accelerate
checkpoints exactly one optimizer per model under FSDP. LoRA trains too few weights to gain from it.

Accelerate applies its FSDP plugin only on accelerators (CUDA and the like) and runs DDP over gloo on
CPUs. FSDP2 itself runs on CPUs over gloo, so there the Accelerator is switched to FSDP after it is
made (`_shard_on_cpus`): CPU clusters shard too, and the tests check FSDP training without a GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from distill.errors import Problem, RunDirError
from distill.train.config import TrainConfig

FSDP_PRESETS = ("large", "xl")
FSDP_CHECKPOINT = "pytorch_model_fsdp_0"  # what Accelerate's save_state writes for a sharded model


def wants_fsdp(config: TrainConfig, processes: int) -> bool:
    """Whether training on `processes` processes shards the model (see the module docstring)."""
    if processes < 2 or config.sharding == "ddp" or config.lora:
        return False
    if config.sharding == "fsdp":
        return True
    big = config.from_scratch and config.preset in FSDP_PRESETS
    if big and config.optimizer != "adamw" and int(os.environ.get("RANK", "0")) == 0:
        print(f"train: the {config.preset} preset trains with DDP, not FSDP: Muon is not sharded "
              f"(set training.optimizer: adamw to shard it)", file=sys.stderr)
    return big and config.optimizer == "adamw"


def make_accelerator(config: TrainConfig, out_dir: Path) -> Accelerator:
    """The Accelerator of this process: one process, DDP or FSDP, on GPUs (NCCL) or CPUs (gloo)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    # Several processes on a machine without a GPU (`accelerate launch --multi_gpu` or torchrun on
    # CPUs): Accelerate runs distributed over gloo only when told the device is the CPU.
    several_cpus = processes > 1 and not torch.cuda.is_available()
    plugin = None
    if wants_fsdp(config, processes):
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",  # one unit per decoder block
            state_dict_type="SHARDED_STATE_DICT", reshard_after_forward=True, cpu_ram_efficient_loading=False)
    # Mixed precision is the loop's own autocast (see loop._train), not Accelerate's: Accelerate fixes it
    # once per process, and a library caller may train students in different precisions one after another.
    accelerator = Accelerator(mixed_precision="no", cpu=several_cpus, fsdp_plugin=plugin,
                              log_with=config.report_to or None, project_dir=out_dir / "trackers")
    if plugin is not None and several_cpus:
        _shard_on_cpus(accelerator, plugin)
    return accelerator


def _shard_on_cpus(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """Accelerate's state says FSDP where it chose MULTI_CPU; it keeps the type in two shared states."""
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def is_sharded(accelerator: Accelerator) -> bool:
    """FSDP: chosen by `training.sharding`, or by `accelerate launch --use_fsdp` on GPUs."""
    return accelerator.distributed_type == DistributedType.FSDP


def check_checkpoint_layout(accelerator: Accelerator, checkpoint: Path) -> None:
    """A checkpoint resumes only under the kind of training that wrote it (sharded or whole)."""
    sharded = (checkpoint / FSDP_CHECKPOINT).is_dir()
    if sharded != is_sharded(accelerator):
        wrote, now = ("FSDP", "DDP or one process") if sharded else ("DDP or one process", "FSDP")
        raise RunDirError(Problem(f"this checkpoint was written by {wrote} training; this launch trains with {now}",
                                  file=checkpoint, key="training.sharding",
                                  hint="resume with the launch and training.sharding that wrote it"))


def whole_model(accelerator: Accelerator, model):
    """The model with all its weights in one place, on the main process (None on the others).

    Every process must call this: under FSDP it gathers the shards. Otherwise it is the unwrapped model."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model) if accelerator.is_main_process else None
    from transformers import AutoModelForCausalLM

    weights = accelerator.get_state_dict(model)  # the full state dict on the main process
    if not accelerator.is_main_process:
        return None
    gathered = AutoModelForCausalLM.from_config(accelerator.unwrap_model(model).config)
    gathered.load_state_dict(weights)
    return gathered
