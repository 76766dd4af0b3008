"""The batched Muon is torch's Muon: the same update from the same gradients, batched per shape."""

import torch

from distill.train.muon import BatchedMuon

SHAPES = [(32, 32), (32, 32), (88, 32), (32, 88), (32, 88), (16, 40)]  # square, tall and wide, one alone


def run(make_optimizer, steps: int = 3) -> list[torch.Tensor]:
    """Weights after `steps` Muon steps from fixed weights and gradients (new gradients every step)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape) * 0.1) for shape in SHAPES]
    optimizer = make_optimizer(params)
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return [p.detach().clone() for p in params]


def test_batched_muon_takes_torchs_steps():
    settings = dict(lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    expected = run(lambda params: torch.optim.Muon(params, **settings))
    batched = run(lambda params: BatchedMuon(params, ns_dtype=torch.bfloat16, **settings))
    in_fp32 = run(lambda params: BatchedMuon(params, ns_dtype=torch.float32, **settings))
    start = run(lambda params: BatchedMuon(params, **settings), steps=0)
    for want, got, fp32, before in zip(expected, batched, in_fp32, start):
        moved = (want - before).abs().max()
        assert moved > 1e-3  # the steps moved the weights
        # the same bf16 arithmetic, batched: equal up to bf16 rounding of the update
        assert (got - want).abs().max() < 0.05 * moved
        # fp32 orthogonalisation: the same update, more exactly
        assert (fp32 - want).abs().max() < 0.05 * moved


def test_batched_muon_keeps_torchs_state():
    """Checkpoints hold the same state: one momentum buffer per matrix, under torch's key."""
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    optimizer = BatchedMuon(params, lr=0.02)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    reference = torch.optim.Muon([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.02)
    reference.load_state_dict(optimizer.state_dict())
    assert all(set(state) == {"momentum_buffer"} for state in optimizer.state.values())
    assert len(reference.state) == len(SHAPES)
