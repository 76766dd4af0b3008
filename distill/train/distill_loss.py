"""Distillation from the teacher's probabilities: cross-entropy on its tokens plus KL to its top-k distribution.

`teacher_documents` lays the examples out as `distill.train.data` does, except that a record carrying the
teacher's distribution (`example["teacher"]`, a `TokenLogprobs` of the tokens the review let through) is
trained on the teacher's own token ids, so every position has the teacher's next-token distribution to
learn; the rest of its text (after a redacted or edited span) is tokenized as usual and trains as plain
targets. Each teacher position's top-k ids, log-probabilities and remaining mass go into one table; a
second `TrainBatches` over "row of the table" documents, with the same seed and lengths, yields for every
batch the table rows of its targets in exactly the order of the token batches (0: no distribution).
Nothing of this is state: a resumed run rebuilds the same table and batches.

The loss at a target with a teacher row, at temperature tau:
    q_T = softmax over k+1 buckets (the teacher's top-k log-probs and the log of its tail mass) / tau
    q_S = the student's softmax(z / tau) on the same k ids, and its mass outside them as the tail bucket
    loss = CE(teacher token) + weight * tau^2 * KL(q_T || q_S)
(Hinton et al. 2015's tau^2 keeps the gradient scale when tau changes.)

The student must share the teacher's vocabulary (`student.tokenizer: teacher`): a tokenizer that does not
know every token the teacher wrote, or one trained by distill itself, falls back to the teacher's text
only, says so, and records it in `distillation.json`; vocabularies are never mixed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distill.files import write_json_atomic
from distill.providers.logprobs import TokenLogprobs, token_bytes_table
from distill.train.data import IGNORE, Document, Kind, TrainBatches, encode_examples

METHOD_FILE = "distillation.json"


@dataclass
class TeacherTable:
    """Row r > 0: the teacher's distribution at one position. Row 0 stands for "none"."""

    ids: list[list[int]] = field(default_factory=lambda: [[]])  # (R, <=k) student vocabulary ids
    logprobs: list[np.ndarray] = field(default_factory=lambda: [np.zeros(0)])  # (R, <=k)
    rest: list[float] = field(default_factory=lambda: [0.0])  # (R,) mass outside the top-k

    def add(self, ids: list[int], logprobs: np.ndarray, rest: float) -> int:
        self.ids.append(ids)
        self.logprobs.append(logprobs)
        self.rest.append(rest)
        return len(self.ids) - 1

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (R, k) with -1 padding, log-probs (R, k) with -inf padding, rest (R,))."""
        k = max(1, max(len(row) for row in self.ids))
        ids = torch.full((len(self.ids), k), -1, dtype=torch.long)
        logprobs = torch.full((len(self.ids), k), float("-inf"))
        for r, (row, values) in enumerate(zip(self.ids, self.logprobs)):
            ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            logprobs[r, : len(row)] = torch.from_numpy(np.asarray(values, dtype=np.float32)[: len(row)])
        return ids, logprobs, torch.tensor(self.rest, dtype=torch.float32)


class VocabularyMismatch(Exception):
    """A teacher token the student's tokenizer does not have."""


def teacher_documents(tokenizer, examples: list[dict], kind: Kind, config, out_dir: Path,
                      ) -> tuple[list[Document], Distiller | None]:
    """The training documents, and the distiller when the run learns the teacher's distribution (None: text
    only, with the reason said on stderr). The method is recorded in `out_dir/distillation.json`."""
    documents = encode_examples(tokenizer, examples, kind)
    settings = config.distillation
    if settings is None:
        return documents, None
    carried = sum(1 for e in examples if e.get("teacher") is not None)
    reason = None
    if carried == 0:
        reason = "no training record carries the teacher's token distribution (a teacher without log-probabilities, or all edited)"
    elif config.from_scratch and config.tokenizer == "own":
        reason = ("student.tokenizer is a BPE trained on the task's text, not the teacher's vocabulary: set "
                  "student.tokenizer: teacher (or the teacher's folder) to learn its distribution")
    if reason is None:
        try:
            documents, positions, table, tokens = _lay_out(tokenizer, examples, documents, kind)
        except VocabularyMismatch as exc:
            reason = f"the student's tokenizer is not the teacher's: {exc}; set student.tokenizer: teacher"
    method = {"method": "text", "teacher_records": carried, "reason": reason}
    if reason is not None:
        print(f"training.distillation: training on the teacher's text only: {reason}", file=sys.stderr)
        write_json_atomic(out_dir / METHOD_FILE, method)
        return documents, None
    method.update(method="distribution", top_k=settings.top_k, temperature=settings.temperature,
                  weight=settings.weight, teacher_tokens=tokens, reason=None)
    write_json_atomic(out_dir / METHOD_FILE, method)
    return documents, Distiller(settings.weight, settings.temperature, table, positions)


def read_method(train_dir: Path) -> dict[str, Any] | None:
    """How the student learned (`distillation.json`), or None for a run without training.distillation."""
    import json

    path = Path(train_dir) / METHOD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _lay_out(tokenizer, examples: list[dict], documents: list[Document], kind: Kind):
    """Documents with the teacher's token ids where it has a distribution, their "table row" twins, the
    table, and how many teacher positions it holds. Raises VocabularyMismatch."""
    by_bytes: dict[bytes, int] = {}
    special = set(tokenizer.all_special_ids)
    table_bytes = token_bytes_table(tokenizer)
    for i in sorted(range(len(table_bytes)), key=lambda i: i in special):  # text tokens first, then eos and the like
        by_bytes.setdefault(table_bytes[i], i)
    table = TeacherTable()
    laid, positions = [], []
    for number, (example, document) in enumerate(zip(examples, documents)):
        teacher = _usable(example)
        rows = np.zeros(len(document.ids), dtype=np.int64)
        if teacher is None:
            laid.append(document)
            positions.append(Document(rows, document.first_target))
            continue
        text_ids = [_id_of(by_bytes, t, example, number) for t in teacher.tokens]
        rest_text = example["text"].encode("utf-8", "surrogatepass")[len(teacher.text_bytes):].decode("utf-8")
        rest_ids = tokenizer(rest_text, add_special_tokens=False)["input_ids"] if rest_text else []
        head = list(document.ids[: document.first_target])
        end = [int(document.ids[-1])] if kind == "instruct" or tokenizer.eos_token_id != head[0] else []
        ids = np.array([*head, *text_ids, *rest_ids, *end], dtype=np.int64)
        rows = np.zeros(len(ids), dtype=np.int64)
        rest_mass = teacher.rest_mass()
        for j in range(len(teacher)):
            top = [_id_of(by_bytes, t, example, number) for t in teacher.top_tokens[j]]
            rows[len(head) + j] = table.add(top, teacher.top_logprobs[j, : len(top)], float(rest_mass[j]))
        laid.append(Document(ids, document.first_target))
        positions.append(Document(rows, document.first_target))
    return laid, positions, table, len(table.ids) - 1


def _usable(example: dict) -> TokenLogprobs | None:
    """The example's teacher tokens, cut back to a character boundary of its text; None when they do not
    spell the start of the text (the text changed after the teacher wrote it)."""
    teacher = example.get("teacher")
    if teacher is None or not len(teacher):
        return None
    text = example["text"].encode("utf-8", "surrogatepass")
    while len(teacher):
        if text.startswith(teacher.text_bytes):
            try:
                text[len(teacher.text_bytes):].decode("utf-8")
                return teacher
            except UnicodeDecodeError:
                pass  # the last token ends inside a character: leave it to the plain text
        teacher = teacher.prefix(len(teacher.text_bytes) - 1)
    return None


def _id_of(by_bytes: dict[bytes, int], token: bytes, example: dict, number: int) -> int:
    found = by_bytes.get(token)
    if found is None:
        raise VocabularyMismatch(f"its vocabulary has no token {token!r} (record {example.get('id', number)})")
    return found


class Distiller:
    """The loss and metrics of distribution distillation. `follow(batches)` wraps the token batches so each
    `get` also takes the teacher rows of its targets; `loss` is called right after, with that batch."""

    def __init__(self, weight: float, temperature: float, table: TeacherTable, positions: list[Document]):
        self.weight, self.temperature = weight, temperature
        self.table = table.tensors()
        self.positions = positions
        self.current: torch.Tensor | None = None  # (B, T) table rows of the current batch's targets
        self._sums = torch.zeros(4)  # KL, argmax agreements, teacher positions, target positions

    def follow(self, batches: TrainBatches) -> DistilledBatches:
        twin = TrainBatches(self.positions, kind=batches.kind, context_length=batches.context_length,
                            batch_size=batches.batch_size, seed=batches.seed, rank=batches.rank,
                            world_size=batches.world_size, pad_id=0)
        assert twin.per_epoch == batches.per_epoch
        return DistilledBatches(batches, twin, self)

    def loss(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=inputs, use_cache=False).logits  # (B, T, V)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
        rows = self.current.to(logits.device)
        taught = rows > 0
        n_targets = float((targets != IGNORE).sum())
        if not bool(taught.any()):
            self._sums += torch.tensor([0.0, 0.0, 0.0, n_targets])
            return ce
        kl, agree = self.kl(logits[taught].float(), rows[taught])
        self._sums += torch.tensor([float(kl.detach().sum()), float(agree), float(taught.sum()), n_targets])
        return ce + self.weight * self.temperature ** 2 * kl.mean()

    def kl(self, logits: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
        """KL(teacher || student) over the k+1 buckets at each of M positions (M,), and how many positions'
        student argmax is the teacher's likeliest token. `logits` (M, V), `rows` (M,)."""
        ids, teacher_lp, rest = (t.to(logits.device) for t in self.table)
        ids, teacher_lp, rest = ids[rows], teacher_lp[rows], rest[rows]  # (M, k), (M, k), (M,)
        tau = self.temperature
        valid = ids >= 0
        q_teacher = torch.log_softmax(torch.cat([teacher_lp, rest.clamp(min=0).log().unsqueeze(-1)], -1) / tau, -1)
        student = torch.log_softmax(logits / tau, dim=-1)
        top = student.gather(-1, ids.clamp(min=0)).masked_fill(~valid, float("-inf"))  # (M, k)
        inside = torch.logsumexp(top, dim=-1).clamp(max=-1e-6)  # log of the student's mass on the top-k
        tail = torch.log(-torch.expm1(inside))  # log(1 - that mass)
        q_student = torch.cat([top, tail.unsqueeze(-1)], -1)
        p = q_teacher.exp()
        terms = torch.where(p > 0, p * (q_teacher - q_student.clamp(min=-1e4)), torch.zeros_like(p))
        agree = int((logits.argmax(-1) == ids[:, 0]).sum())
        return terms.sum(-1), agree

    def metrics(self) -> dict[str, float]:
        """KL per teacher token, argmax agreement and the share of targets taught, since the last call."""
        kl, agree, taught, targets = self._sums.tolist()
        self._sums.zero_()
        if not targets:
            return {}
        return {"kl_per_token": round(kl / taught, 5) if taught else None,
                "teacher_agreement": round(agree / taught, 4) if taught else None,
                "taught_share": round(taught / targets, 4)}


class DistilledBatches:
    """TrainBatches that also hand the distiller the teacher rows of each batch's targets."""

    def __init__(self, batches: TrainBatches, twin: TrainBatches, distiller: Distiller):
        self.batches, self.twin, self.distiller = batches, twin, distiller
        self.kind, self.per_epoch = batches.kind, batches.per_epoch

    def get(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.batches.get(epoch, index)
        self.distiller.current = self.twin.get(epoch, index)[1].clamp(min=0)  # IGNORE (prompt, padding) -> 0
        return inputs, targets
