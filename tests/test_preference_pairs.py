"""Preference pairs from the review: each pair traces back to its audit entries, pairs are reviewed and
signed off with the review core, and an edit after sign-off breaks the chain to the preference-tuned weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.lineage import weights_digest
from distill.release.gate import chain_failures
from distill.release.sources import ChainFacts, read_review
from distill.review.actions import Query, decide, edit
from distill.review.audit import read_log, verify_log
from distill.review.pairs import (
    chain_problems, decide_pairs, make_pairs, pairs_dir, pairs_state, pairs_view, read_pairs, sample_pairs, sign_off_pairs,
)
from distill.review.stage import review_with_settings, spec_review_settings
from distill.review.store import build_view, trainable
from distill.rundir import RunDir
from distill.spec import load_spec
from distill.synthesis import generate
from distill.synthesis.generate import override_teacher
from distill.train import make_train_config, spec_train_config
from distill.train.preference import run_preference
from distill.train.tokenizer import DEFAULT_CHAT_TEMPLATE
from tiny_lm import tiny_llama, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def reviewed(tmp_path, monkeypatch):
    """60 offline stories, reviewed; a reviewer rejects the fights and edits one sad ending; signed off."""
    monkeypatch.chdir(REPO)  # the example policy names its lexicon by a path from the repository
    loaded = override_teacher(load_spec(REPO / "specs" / "tinystories-preferences.yaml"), records=60)
    run = RunDir.create(loaded, root=tmp_path)
    generate(loaded, run, show_progress=False)
    settings = spec_review_settings(loaded)
    review_with_settings(run.path, settings, progress=False)
    view = build_view(run.path)
    fights = [r.id for r in view if "fight" in r.text and trainable(r)]
    decide(run.path, fights, "reject", reviewer="ana", note="characters fight")
    sad = next(r for r in view if r.id not in fights and trainable(r))
    edit(run.path, sad.id, sad.text + " Then Dad came and they all had a picnic.", reviewer="ana")
    review_with_settings(run.path, settings, progress=False)  # the offline demo signs off again, automatically
    return run, loaded, fights, sad.id


def test_pairs_trace_back_to_their_audit_entries_and_are_signed_off_with_the_review_core(reviewed):
    run, loaded, fights, edited = reviewed
    assert fights, "the seeded stories include fights"
    made = make_pairs(run.path, loaded)
    log = {e["seq"]: e for e in read_log(run.path / "review")}
    view = {r.id: r for r in build_view(run.path)}
    assert {p.source for p in made} == {"edit", "rejection"} and {p.record for p in made if p.source == "rejection"} <= set(fights)
    for pair in made:
        assert pair.audit and all(pair.record in log[seq]["ids"] for seq in pair.audit)
        actions = {log[seq]["action"] for seq in pair.audit}
        if pair.source == "edit":
            assert actions == {"edit"} and pair.chosen == view[pair.record].text
            assert pair.rejected == view[pair.record].original_text
        else:
            assert actions == {"reject"} and pair.rejected == view[pair.record].original_text
            assert "fight" not in pair.chosen and pair.chosen != pair.rejected
    stored = read_pairs(run.path)
    assert [line["audit"] for line in stored] == [list(p.audit) for p in made]
    assert pairs_state(run.path) is not None  # the offline demo's policy signs off automatically
    assert read_log(pairs_dir(run.path))[0]["action"] == "make_pairs" and verify_log(pairs_dir(run.path)) == []

    entry, ids = decide_pairs(run.path, Query(q="picnic"), "reject", reviewer="bo", note="a picnic is off-task",
                              expected_count=1)
    assert ids == [next(p.id for p in made if p.source == "edit")] and entry["action"] == "reject"
    assert pairs_state(run.path) is None  # the signed-off pairs changed
    sample_pairs(run.path, reviewer="bo", size=len(made), seed=1)
    assert sign_off_pairs(run.path, [], reviewer="bo")["accepted"]
    assert pairs_state(run.path) is not None and len([r for r in pairs_view(run.path) if trainable(r)]) == len(made) - 1


def supervised_student(train_dir: Path) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE  # an instruct student's, as distill trains it
    model = tiny_llama(len(tokenizer))
    model.save_pretrained(train_dir / "model")
    tokenizer.save_pretrained(train_dir / "model")
    (train_dir / "result.json").write_text(json.dumps({"weights_sha256": weights_digest(train_dir / "model"),
                                                        "dataset_fingerprint": "sft"}))


def test_an_edit_after_sign_off_breaks_the_chain_to_the_preference_tuned_weights(reviewed):
    run, loaded, fights, _ = reviewed
    make_pairs(run.path, loaded)
    config = spec_train_config(loaded)
    config = make_train_config({**config.model_dump(), "num_threads": 1, "context_length": 128,
                                "preference": {"steps": 2, "batch_size": 2, "log_every": 1}})
    supervised_student(run.path / "train")
    line = run_preference(run.path, config, loaded.spec.kind)
    assert line.startswith("preference (dpo,")
    trained = json.loads((run.path / "train" / "result.json").read_text())["preference"]
    assert trained["pairs_fingerprint"] == pairs_state(run.path)["pairs_fingerprint"]
    assert chain_problems(run.path, trained) == []

    kept = next(r for r in build_view(run.path) if trainable(r) and r.id not in fights)
    edit(run.path, kept.id, kept.text.replace(".", "!", 1), reviewer="mallory")  # after every sign-off
    assert pairs_state(run.path) is None
    assert chain_problems(run.path, trained) and "changed after its sign-off" in chain_problems(run.path, trained)[0]
    weights = weights_digest(run.path / "train" / "model")
    facts = ChainFacts(trained_on="sft", trained_weights=weights, evaluated_weights=weights, current_weights=weights,
                       load_problem=None, spec_policy="children-preferences",
                       preference_problems=tuple(chain_problems(run.path, trained)))  # as read_chain reads them
    broken = chain_failures(read_review(run.path), facts)
    assert [p.key for p in broken] == ["train.preference"]
