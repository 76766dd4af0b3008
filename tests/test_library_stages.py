"""The stages as library calls: explicit inputs, an output folder, flat settings; no spec object.
generate (from prompts rendered beforehand, against the loopback teacher) -> review -> train -> eval -> release."""

from __future__ import annotations

import json
from pathlib import Path

from distill.evaluate.result import EvalResult
from distill.evaluate.stage import EvalSettings, EvalTask, evaluate
from distill.release import ReleaseInputs, release_gate, verify, write_release
from distill.release.sources import read_dataset, read_eval, read_model_files, read_review
from distill.review import reviewed_examples, run_review
from distill.review.policy import load_policy
from distill.providers.protocol import Message
from distill.spec import Release, Teacher
from distill.synthesis.generate import synthesize
from distill.synthesis.records import GenerationPlan, RenderedPrompt, RenderedPrompts, StepPlan
from distill.train import TrainConfig, train_student
from test_train_data import stories
from test_train_loop import TINY

from tests.teacher_server import TeacherServer


def test_prompts_to_released_bundle_through_library_calls(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    texts = stories(40)
    prompts = [RenderedPrompt((Message("user", f"Write story number {i}."),), variables={"n": i}) for i in range(40)]

    def answer(call) -> str:  # the teacher writes story i for "story number i"
        return texts[int(call.messages[-1][1].split()[-1].rstrip("."))]

    monkeypatch.setenv("DISTILL_TEST_TEACHER_KEY", "test-key")
    with TeacherServer(responder=answer) as server:
        teacher = Teacher(provider="openai", model="gpt-4o-mini", base_url=server.openai_base_url,
                          api_key_env="DISTILL_TEST_TEACHER_KEY", concurrency=4)
        plan = GenerationPlan(RenderedPrompts(prompts), (StepPlan("story", params={"max_tokens": 80}),), "story")
        generated = synthesize(plan, run_dir, teacher, records=len(prompts), show_progress=False)
    assert generated.complete and generated.counts["ok"] == 40 and len(server.calls) == 40
    assert generated.dataset_path == run_dir / "dataset"
    asked = {call.messages: call.max_tokens for call in server.calls}
    assert asked[(("user", "Write story number 3."),)] == 80

    policy = load_policy("general")
    summary = run_review(run_dir, policy=policy, progress=False)
    kept = reviewed_examples(run_dir)
    assert summary.status["kept"] == len(kept) > 20

    config = TrainConfig(**{**TINY, "max_steps": 4, "eval_every": 2, "checkpoint_every": 4})
    trained = train_student(kept, run_dir / "train", config, kind="text")
    assert trained.steps == 4 and (trained.model_dir / "config.json").is_file()

    val_ids = set(json.loads((run_dir / "train" / "split.json").read_text())["val"])
    heldout = [{**e, "variables": {}} for e in kept if e["id"] in val_ids]
    settings = EvalSettings(prompts=2, samples_per_prompt=1, max_new_tokens=8, probe_samples=1, batch_size=4)
    task = EvalTask(name="library/run", kind="text", context_length=config.context_length, policy=policy)
    result = evaluate(trained.model_dir, heldout, run_dir / "eval", settings, task)
    assert result.heldout_examples == len(heldout) and result.validation_bpb > 0
    assert result.grading is None and result.probes.summary.overall.completions > 0
    assert EvalResult.from_json(run_dir / "eval" / "eval.json") == result
    assert (run_dir / "eval" / "report.html").is_file()

    # Nobody signed the review off: releasing anyway takes the development override, stamped in the bundle.
    monkeypatch.setenv("DISTILL_ALLOW_GATE_OVERRIDE", "1")
    inputs = ReleaseInputs(name="library", kind="text", release=Release(version="0.0.1"),
                           model_files=read_model_files(trained.model_dir), dataset=read_dataset(run_dir / "dataset"),
                           review=read_review(run_dir), evaluation=read_eval(run_dir / "eval"),
                           training=config.model_dump(mode="json"))
    gate = release_gate(inputs, "library test: no sign-off")
    assert not gate["passed"] and gate["override"]["reason"] == "library test: no sign-off"
    bundle = write_release(inputs, tmp_path / "out", gate=gate)
    assert bundle.name == "library-0.0.1" and verify(bundle).ok
    assert verify(tmp_path / "out" / "library-0.0.1.tar.gz").ok
