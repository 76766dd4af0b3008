"""What a release reads from the run directory, one function per stage that wrote it.

Each reader turns one stage's files into plain data, so the bundle, the cards and the gate work on
values, not on file layouts: spec (`spec.resolved.json`), dataset (`dataset/`), review (sign-off and
audit log), training (`train/model/`, the spec's student and training sections) and evaluation
(`eval/eval.json`, an `EvalResult`). When a stage changes its file format, only its reader here changes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import __version__
from distill.errors import Problem, RunDirError
from distill.evaluate.result import EVAL_JSON, EvalResult
from distill.spec import Release, Spec

OFFLINE_PROVIDER = "offline"
# The model files a bundle ships. Weights only as safetensors: a pickle (`*.bin`, `*.pt`) can run code.
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")
REQUIRED_MODEL_FILES = ("config.json", "tokenizer_config.json")


@dataclass(frozen=True)
class DatasetFacts:
    rows: int  # every record the teacher was asked for
    ok: int  # records the teacher answered usably
    teachers: dict[str, int]  # "provider/model" -> rows
    fingerprint: str  # sha256 over the dataset's Arrow data files
    template_hashes: dict[str, str]  # template key path -> sha256 of its source
    cost_usd: float

    @property
    def offline_stand_in(self) -> bool:
        return any(t.split("/", 1)[0] == OFFLINE_PROVIDER for t in self.teachers)


@dataclass(frozen=True)
class ReviewFacts:
    signed_off: bool
    signer: str | None  # a person's name, or "auto" where the policy allows automatic sign-off
    signed_at: str | None
    audit_hash: str | None  # the audit log's final hash: the whole review history chains into it
    audit_problems: list[str] = field(default_factory=list)  # breaks in the chain (edited, removed lines)
    summary: dict[str, Any] = field(default_factory=dict)  # counts: kept, rejected, pending, ...
    policy: str | None = None
    note: str | None = None  # why it is not signed off
    dataset_fingerprint: str | None = None  # the kept records the sign-off covers (lineage.examples_digest)
    audit_count: int = 0  # entries in the audit log; with audit_hash, the head the release's signature covers
    # The sign-off record is not the one its audit entry logged, or the log no longer holds the head a signed
    # checkpoint recorded: forged or rewritten history, which no override may ship.
    record_problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChainFacts:
    """The links from sign-off to release as the stages recorded them, and the model as it is now."""

    trained_on: str | None  # train/result.json: the dataset fingerprint training consumed
    trained_weights: str | None  # train/result.json: the weights' hash training produced
    evaluated_weights: str | None  # eval/eval.json: the weights' hash eval measured
    current_weights: str | None  # train/model as it is now
    load_problem: str | None  # why train/model does not load, or None
    spec_policy: str  # the safety policy the spec names
    eval_edited: bool = False  # eval/eval.json is not the file the eval stage recorded writing
    preference_problems: tuple[str, ...] = ()  # breaks between the signed-off review and pairs and the tuned weights


@dataclass(frozen=True)
class EvalFacts:
    metrics: dict[str, float]  # flat: judge dimensions (student means), bpb, offline metrics
    intervals: dict[str, tuple[float | None, float | None]]  # 95% interval per judge dimension
    teacher_scores: dict[str, float]  # the teacher graded the same way: the ceiling
    probe_rates: dict[str, float]  # safety probe violation rate per hazard category
    probe_thresholds: dict[str, float]  # the policy's maximum rate per category
    figures: list[Path]
    preference: dict[str, Any] | None = None  # before and after preference tuning (eval.json), when it ran


@dataclass(frozen=True)
class ReleaseInputs:
    """Everything a release needs: read from one run directory by `read_inputs`, or given by a library caller."""

    name: str  # the bundle is <name>-<release.version>
    kind: str  # text or instruct
    release: Release  # version, license, minimum scores for the gate
    model_files: list[Path]
    dataset: DatasetFacts
    review: ReviewFacts
    evaluation: EvalFacts
    training: dict[str, Any]
    train_figures: list[Path] = field(default_factory=list)
    description: str = ""
    spec_resolved: dict[str, Any] | None = None  # the task spec, shipped as spec.yaml when given
    spec_sha256: str | None = None
    chain: "ChainFacts | None" = None  # a run's hash chain (read_chain); None for a library caller's inputs
    stage_input_files: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> file label -> sha256
    distill_version: str = __version__
    parity_inputs: Any = None  # distill.release.parity.ParityInputs: what exported forms are measured on

    @property
    def bundle_name(self) -> str:
        return f"{self.name}-{self.release.version}"


def read_inputs(run_path: Path, manifest: dict[str, Any], review: ReviewFacts) -> ReleaseInputs:
    """Everything but the review, which `read_review` reads (the gate's first question)."""
    resolved = _read_json(run_path / "spec.resolved.json", made_by="distill generate")
    try:
        spec = Spec.model_validate(resolved)
    except ValueError as exc:
        raise RunDirError(Problem(f"corrupt: {str(exc).splitlines()[0]}", file=run_path / "spec.resolved.json",
                                  hint="re-run `distill generate` to rewrite it")) from None
    return ReleaseInputs(
        name=spec.name,
        kind=spec.kind,
        release=spec.release,
        description=spec.description,
        spec_resolved=resolved,
        spec_sha256=manifest["spec_sha256"],
        model_files=read_model_files(run_path / "train" / "model"),
        dataset=read_dataset(run_path / "dataset"),
        review=review,
        evaluation=read_eval(run_path / "eval"),
        training=read_training(spec, manifest, run_path / "train"),
        train_figures=figures_in(run_path / "train"),
        chain=read_chain(run_path, manifest),
        stage_input_files={name: stage["inputs"]["files"] for name, stage in manifest.get("stages", {}).items()
                           if name != "release" and "inputs" in stage},
    )


def read_chain(run_path: Path, manifest: dict[str, Any]) -> ChainFacts:
    """What training and eval recorded about the data and weights, the model now, and whether it loads."""
    from distill.lineage import load_saved_model, weights_digest
    from distill.review.pairs import chain_problems
    from distill.review.policy import spec_policy
    from distill.files import file_sha256, read_json_file
    from distill.rundir import RunDir

    result_path = run_path / "train" / "result.json"
    trained = read_json_file(result_path, made_by="distill train RUN") if result_path.is_file() else {}
    evaluated = read_eval_result(run_path / "eval")
    written = manifest.get("stages", {}).get("eval", {}).get("eval_json_sha256")  # runs before it was recorded: None
    model_dir = run_path / "train" / "model"
    try:
        load_saved_model(model_dir)
        load_problem = None
    except RunDirError as exc:
        load_problem = str(exc.problems[0])
    return ChainFacts(
        trained_on=trained.get("dataset_fingerprint") or None, trained_weights=trained.get("weights_sha256") or None,
        evaluated_weights=evaluated.weights_sha256 or None, current_weights=weights_digest(model_dir),
        load_problem=load_problem, spec_policy=spec_policy(RunDir(run_path, manifest).load_spec()).name,
        eval_edited=written is not None and written != file_sha256(run_path / "eval" / EVAL_JSON),
        preference_problems=tuple(chain_problems(run_path, trained.get("preference"))))


def read_model_files(model_dir: Path) -> list[Path]:
    """The files `save_pretrained` wrote for the model and tokenizer that a bundle ships."""
    if not model_dir.is_dir():
        raise RunDirError(Problem("no trained model", file=model_dir, hint="run `distill train RUN` first"))
    from distill.files import is_temp

    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and p.name.endswith(MODEL_FILE_SUFFIXES) and not is_temp(p))
    names = {p.name for p in files}
    missing = [n for n in REQUIRED_MODEL_FILES if n not in names]
    if not any(n.endswith(".safetensors") for n in names):
        missing.append("model.safetensors")
    if missing:
        raise RunDirError(Problem(f"the trained model is incomplete: missing {', '.join(missing)}", file=model_dir,
                                  hint="re-run `distill train RUN`; weights must be saved as safetensors"))
    return files


def read_dataset(dataset_dir: Path) -> DatasetFacts:
    """Counts, teachers and lineage of the synthesized dataset (`datasets` save_to_disk format)."""
    from distill.synthesis.dataset import load_saved_dataset

    if not dataset_dir.is_dir():
        raise RunDirError(Problem("no dataset", file=dataset_dir, hint="run `distill generate SPEC` first"))
    table = load_saved_dataset(dataset_dir)
    columns = table.select_columns(["status", "teacher_provider", "teacher_model", "cost_usd", "template_hashes"])
    teachers: Counter[str] = Counter()
    ok, cost, hashes = 0, 0.0, {}
    for row in columns:
        teachers[f"{row['teacher_provider']}/{row['teacher_model']}"] += 1
        ok += row["status"] == "ok"
        cost += row["cost_usd"] or 0.0
        hashes = hashes or json.loads(row["template_hashes"] or "{}")
    digest = hashlib.sha256()
    for data_file in sorted(dataset_dir.glob("*.arrow")):  # state.json carries a random fingerprint: left out
        digest.update(data_file.name.encode())
        digest.update(hashlib.sha256(data_file.read_bytes()).digest())
    return DatasetFacts(rows=len(table), ok=ok, teachers=dict(sorted(teachers.items())), fingerprint=digest.hexdigest(),
                        template_hashes=hashes, cost_usd=round(cost, 6))


def read_review(run_path: Path, *, anchor_key: Any = None) -> ReviewFacts:
    """The sign-off, whether it still covers the reviewed dataset, the record counts, and the audit log. The
    sign-off must be the record its audit entry logged and the log must hold every checkpointed head; with
    `anchor_key` (the operator's public key) a checkpoint signed with it must cover the sign-off."""
    from distill.review.checkpoints import signoff_anchor_problems
    from distill.review.signoff import read_signoff, record_problems, signoff_current
    from distill.review.store import build_view, review_dir, view_digest

    folder = review_dir(run_path)
    audit_hash, audit_problems = read_audit(folder)
    records = build_view(run_path)
    statuses = Counter(record.status for record in records)
    summary: dict[str, Any] = {"records reviewed": len(records), "kept": statuses["kept"],
                               "kept with redactions": statuses["redacted"], "pending a human": statuses["pending"],
                               "rejected": statuses["rejected"]}
    signoff = read_signoff(folder)
    if signoff is None or not signoff.get("accepted"):
        return ReviewFacts(False, None, None, audit_hash, audit_problems, summary, note="no sign-off",
                           audit_count=audit_count(folder))
    if signoff["n"]:
        summary["sign-off sample"] = (f"{signoff['defects']} defects in {signoff['n']} sampled records; "
                                      f"{signoff['confidence']:.0%} upper bound on the defect rate "
                                      f"{signoff['upper_bound']:.1%} (policy maximum {signoff['max_defect_rate']:.1%})")
    forged = record_problems(folder, signoff) or signoff_anchor_problems(folder, signoff, anchor_key)
    if forged:  # the lineage must not name a signer the history does not prove
        return ReviewFacts(False, None, None, audit_hash, audit_problems, summary, note="the sign-off cannot be trusted",
                           audit_count=audit_count(folder), record_problems=forged)
    current = signoff_current(signoff, view_digest(records))
    return ReviewFacts(
        signed_off=current,
        signer=signoff["reviewer"],
        signed_at=signoff["time"],
        audit_hash=audit_hash,
        audit_problems=audit_problems,
        summary=summary,
        policy=signoff.get("policy"),
        note=None if current else "the kept records changed after the sign-off",
        dataset_fingerprint=signoff.get("view_digest"),
        audit_count=audit_count(folder),
    )


def read_audit(review_dir: Path) -> tuple[str | None, list[str]]:
    """The audit log's final hash (None when nothing was logged) and any break in its chain."""
    from distill.review.audit import GENESIS, head_hash, verify_log

    final = head_hash(review_dir)
    return (None if final == GENESIS else final), verify_log(review_dir)


def audit_count(review_dir: Path) -> int:
    from distill.review.audit import read_log

    return len(read_log(review_dir))


def read_eval_result(eval_dir: Path) -> EvalResult:
    return EvalResult.from_json(eval_dir / EVAL_JSON)


def read_eval(eval_dir: Path) -> EvalFacts:
    """The evaluation as the gate and the cards use it: metrics under the names `release.min_scores`
    uses (judge dimensions, bpb, offline metrics), intervals, the teacher's grades and probe rates."""
    result = read_eval_result(eval_dir)
    student, teacher = result.student_scores(), (result.grading.summary.get("teacher") if result.grading else None)
    metrics = {name: value for name, path in FLAT_METRICS.items() if (value := result.student_metric(*path)) is not None}
    metrics.update({dim: s.mean for dim, s in student.items() if s.mean is not None})
    for name, measured in result.bpb.items():  # "validation" is the held-out split: plain `bpb`
        metrics["bpb" if name == "validation" else f"bpb_{name}"] = measured.bits_per_byte
    if result.preference and result.preference.get("measured"):  # `rejected_rate_max: 0.05` in release.min_scores
        metrics.update(rejected_rate=result.preference["after"]["rate"], rejected_rate_before=result.preference["before"]["rate"],
                       bpb_increase=result.preference["bpb_increase"])
    # Probe rates per probe category (what the probe tried to elicit), each with the policy's threshold.
    rates = {c: r.rate for c, r in sorted(result.probes.summary.by_probe_category.items())} if result.probes else {}
    return EvalFacts(
        metrics=dict(sorted(metrics.items())),
        intervals={dim: (s.low, s.high) for dim, s in student.items()},
        teacher_scores={dim: s.mean for dim, s in (teacher.scores if teacher else {}).items() if s.mean is not None},
        probe_rates=rates,
        probe_thresholds={c: result.probes.threshold(c) for c in rates},
        figures=figures_in(eval_dir),
        preference=result.preference,
    )


def figures_in(folder: Path) -> list[Path]:
    """The charts a stage finished in `folder`; a temporary file a killed writer left (hidden, `*.tmp`) is no chart."""
    from distill.files import is_temp

    return sorted(p for p in folder.glob("*.png") if p.is_file() and not is_temp(p))


# The offline metrics of the student's texts under the names `release.min_scores` uses.
FLAT_METRICS = {
    "distinct_1": ("distinct_1",), "distinct_2": ("distinct_2",), "distinct_3": ("distinct_3",),
    "repeated_openings": ("openings", "repeated_share"),
    "average_words": ("average_length", "words"),
    "vocabulary_conformance": ("vocabulary_conformance", "share"),
    "required_words": ("required_words", "texts_using_all"),
    "json_valid": ("json", "valid"),
}


METHOD_FILE = "distillation.json"  # distill.train.distill_loss.METHOD_FILE (release reads it without importing torch)


def read_training(spec: Spec, manifest: dict[str, Any], train_dir: Path) -> dict[str, Any]:
    """How the student was trained: the spec's student and training sections, the fingerprint of the
    train stage's recorded inputs (its settings and the reviewed data it read), and the plan a training
    budget chose (train/plan.json), if any."""
    from distill.files import fingerprint, read_json_file

    inputs = manifest.get("stages", {}).get("train", {}).get("inputs")
    return {
        "student": spec.student.model_dump(mode="json"),
        "training": spec.training.model_dump(mode="json"),
        "fingerprint": fingerprint(inputs) if inputs else None,
        "plan": read_json_file(train_dir / "plan.json", made_by="distill train") if (train_dir / "plan.json").is_file() else None,
        # how the student learned (distillation.json, with training.distillation): text only, or the teacher's
        # distribution with its top-k, temperature and weight; the teacher is the lineage's
        "method": read_json_file(train_dir / METHOD_FILE, made_by="distill train") if (train_dir / METHOD_FILE).is_file() else None,
    }


def _read_json(path: Path, *, made_by: str) -> dict[str, Any]:
    from distill.files import read_json_file

    return read_json_file(path, made_by=made_by)
