"""Training FLOPs per token, the machine's matmul peak, and MFU.

FLOPs per trained token (forward + backward), for a decoder of L layers, attention width d_attn
(heads x head size) and context T:

    6 * N_trainable + 4 * N_frozen + 6 * L * T * d_attn

- N counts the weights of every matmul a token passes through: all Linear layers, the output head
  included (tied or not); embedding lookups and norms do no matmuls and are left out. A matmul costs
  2 FLOPs per weight forward and 4 backward (gradient of the input and of the weight); a frozen weight
  (LoRA's base model) skips its weight gradient, so 2 + 2.
- Attention scores and the weighted sum of values each cost 2 * T * d_attn FLOPs per token forward
  when every position sees all T keys. Causal attention sees T/2 keys on average and the kernels skip
  the masked half, so we count half: 2 * L * T * d_attn forward, x3 with the backward. (PaLM's and
  nanoGPT's 12 * L * T * d count the masked half too; ours is the stricter figure.)

MFU = FLOPs per token x tokens per second / (peak FLOP/s x devices), where the peak is measured on
this machine (a large square matmul in the precision training runs in), not taken from a datasheet.
"""

from __future__ import annotations

import time

import torch


def flops_per_token(model, context_length: int) -> float:
    """Training FLOPs per token of `model` at `context_length`, by the formula above."""
    trainable = frozen = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for param in module.parameters(recurse=False):
                if param.dim() == 2:  # weights only: bias adds are not matmuls
                    if param.requires_grad:
                        trainable += param.numel()
                    else:
                        frozen += param.numel()
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 6 * config.num_hidden_layers * context_length * config.num_attention_heads * head_dim
    return 6 * trainable + 4 * frozen + attention


def measure_matmul_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                         size: int | None = None, seconds: float = 1.0) -> float:
    """Sustained FLOP/s of an n x n matmul on `device` in `dtype`: the peak MFU is measured against."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator(device).manual_seed(0)  # leave the global RNG (dropout's) untouched
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    for _ in range(3):  # warm up the kernels and the clocks
        a @ b
    _sync(device)
    per_check = 20 if device.type == "cuda" else 1  # GPU matmuls are queued: time batches of them
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(per_check):
            a @ b
        count += per_check
        _sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
