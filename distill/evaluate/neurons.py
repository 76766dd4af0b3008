"""What MLP neurons fire on: the top-activating tokens of the most variable neurons, with their context.

A neuron's activation is the input of the MLP's down projection: act_fn(gate_proj(x)) * up_proj(x) for
Llama-style MLPs, caught with a forward pre-hook on every `mlp.down_proj`. Over a held-out corpus we keep,
per neuron, a running mean and variance and the k largest activations with where they happened
(streaming: memory is O(k x neurons), not O(tokens x neurons)). The report shows the neurons with the
highest variance per layer, each with its top-k tokens in context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from distill.train.data import start_token


@dataclass
class RunningTopK:
    """Per neuron: the k largest values seen and their global token positions; plus sum and sum of squares."""

    k: int
    neurons: int
    values: torch.Tensor = field(init=False)  # (k, N), descending per column
    positions: torch.Tensor = field(init=False)  # (k, N), global token index of each value
    count: int = 0
    total: torch.Tensor = field(init=False)  # (N,) float64
    total_sq: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.values = torch.full((self.k, self.neurons), float("-inf"))
        self.positions = torch.full((self.k, self.neurons), -1, dtype=torch.long)
        self.total = torch.zeros(self.neurons, dtype=torch.float64)
        self.total_sq = torch.zeros(self.neurons, dtype=torch.float64)

    def add(self, activations: torch.Tensor, first_position: int) -> None:
        """`activations` (T, N) for consecutive global positions first_position .. first_position + T - 1."""
        T = activations.shape[0]
        activations = activations.float()
        self.count += T
        self.total += activations.sum(0).double()
        self.total_sq += (activations.double() ** 2).sum(0)
        positions = torch.arange(first_position, first_position + T).unsqueeze(1).expand(T, self.neurons)
        values = torch.cat([self.values, activations])
        keep = values.topk(min(self.k, values.shape[0]), dim=0)
        self.values = keep.values
        self.positions = torch.cat([self.positions, positions]).gather(0, keep.indices)

    def variance(self) -> torch.Tensor:
        mean = self.total / max(self.count, 1)
        return (self.total_sq / max(self.count, 1) - mean**2).clamp(min=0)


@dataclass(frozen=True)
class NeuronContext:
    activation: float
    text: int  # index of the held-out text
    position: int  # token position in that text (0 is the start token)
    before: str
    token: str
    after: str


@dataclass(frozen=True)
class NeuronReport:
    layer: int
    neuron: int
    variance: float
    mean: float
    top: list[NeuronContext]


def mlp_modules(model) -> list[torch.nn.Module]:
    """The down projections of every layer's MLP, in layer order."""
    found = [module for name, module in model.named_modules() if name.endswith("mlp.down_proj")]
    if not found:
        raise ValueError(f"{type(model).__name__} has no `mlp.down_proj` modules: neuron maps need a Llama-style MLP")
    return found


def neuron_activations(model, tokenizer, texts: Sequence[str], *, context_length: int, top_k: int = 8
                       ) -> tuple[list[RunningTopK], list[list[int]]]:
    """Stream `texts` through the model; per layer a RunningTopK, and every text's token ids."""
    model.eval()
    device = next(model.parameters()).device
    modules = mlp_modules(model)
    trackers = [RunningTopK(top_k, m.in_features) for m in modules]
    captured: list[torch.Tensor | None] = [None] * len(modules)

    def hook(index: int):
        def capture(module, args):
            captured[index] = args[0][0].detach().cpu()  # (T, N) of the single sequence
        return capture

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    all_ids: list[list[int]] = []
    position = 0
    try:
        with torch.no_grad():
            for text in texts:
                ids = [start_token(tokenizer), *tokenizer.encode(text, add_special_tokens=False)][:context_length]
                model(input_ids=torch.tensor([ids], device=device))
                for tracker, activations in zip(trackers, captured):
                    tracker.add(activations, position)
                all_ids.append(ids)
                position += len(ids)
    finally:
        for handle in handles:
            handle.remove()
    return trackers, all_ids


def top_neurons(trackers: Sequence[RunningTopK], ids: Sequence[Sequence[int]], tokenizer, *, per_layer: int,
                before: int = 12, after: int = 3) -> list[list[NeuronReport]]:
    """Per layer, the `per_layer` highest-variance neurons with their top contexts (most active first)."""
    starts = torch.tensor([0, *torch.tensor([len(x) for x in ids]).cumsum(0).tolist()])
    layers = []
    for layer, tracker in enumerate(trackers):
        variance = tracker.variance()
        mean = tracker.total / max(tracker.count, 1)
        chosen = variance.topk(min(per_layer, tracker.neurons)).indices.tolist()
        reports = []
        for neuron in chosen:
            contexts = []
            for value, global_position in zip(tracker.values[:, neuron].tolist(), tracker.positions[:, neuron].tolist()):
                if global_position < 0:
                    continue
                text = int(torch.searchsorted(starts, global_position, right=True)) - 1
                pos = global_position - int(starts[text])
                row = ids[text]
                contexts.append(NeuronContext(
                    activation=value, text=text, position=pos,
                    before=tokenizer.decode(row[max(0, pos - before):pos], skip_special_tokens=True),
                    token=tokenizer.decode([row[pos]]),
                    after=tokenizer.decode(row[pos + 1:pos + 1 + after], skip_special_tokens=True)))
            reports.append(NeuronReport(layer, neuron, float(variance[neuron]), float(mean[neuron]), contexts))
        layers.append(reports)
    return layers
