"""Synthesis end to end against the loopback teacher server: the real SDK clients, faults, batches, caps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from distill.errors import SpecError
from distill.rundir import RunDir
from distill.spec import load_spec
from distill.synthesis import generate
from distill.synthesis.records import SCHEMA_CORRECTION
from tests.teacher_server import TeacherServer, TeacherServerProcess, default_answer_text

KEY_ENV = "DISTILL_TEST_TEACHER_KEY"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")


def write_spec(folder: Path, base_url: str, *, records: int = 12, provider: str = "openai", model: str = "gpt-4o-mini",
               json_step: bool = True, extra_teacher: str = "") -> Path:
    """A two-step spec (JSON facts, then a story using them) or a one-step text spec, inline templates."""
    folder.mkdir(parents=True, exist_ok=True)
    facts = """
  - name: facts
    user: "Facts about a {{ animal }} as JSON. #{{ record_index }}#"
    output: json
    json_schema: {type: object, properties: {name: {type: string}, legs: {type: integer}}, required: [name, legs]}"""
    story_user = "Story about {{ steps.facts.name }} with {{ steps.facts.legs }} legs. #{{ record_index }}#" if json_step \
        else "Story about a {{ animal }}. #{{ record_index }}#"
    (folder / "spec.yaml").write_text(f"""
name: synth-test
kind: text
records: {records}
variables:
  animal: {{type: choice, items: [fox, bear, owl, cat]}}
steps:{facts if json_step else ""}
  - name: story
    system: "You write short stories."
    user: "{story_user}"
teacher:
  provider: {provider}
  model: {model}
  base_url: {base_url}
  api_key_env: {KEY_ENV}
  concurrency: 4
  timeout_s: 5
  max_retries: 3
  params: {{max_tokens: 200}}
{extra_teacher}
""")
    return folder / "spec.yaml"


def run_generate(spec: Path, root: Path, **options):
    loaded = load_spec(spec)
    run = RunDir.create(loaded, root=root)
    options.setdefault("backoff_base_s", 0.01)
    return generate(loaded, run, show_progress=False, **options), run


def rows_of(result) -> list[dict]:
    return list(datasets.load_from_disk(str(result.dataset_path)))


def test_generate_writes_dataset_and_rerun_sends_nothing(tmp_path):
    with TeacherServer(latency=0.01) as server:
        spec = write_spec(tmp_path, server.openai_base_url)
        result, run = run_generate(spec, tmp_path / "runs")
        assert result.complete and result.tally.done == 12
        rows = rows_of(result)
        assert [r["id"] for r in rows] == list(range(12)) and {r["status"] for r in rows} == {"ok"}
        story_prompt = json.loads(rows[0]["steps"])[1]["messages"][1][1]
        facts = json.loads(rows[0]["steps"])[0]["output"]
        assert story_prompt.startswith(f"Story about {facts['name']} with {facts['legs']} legs")  # step 1 feeds step 2
        assert rows[0]["cost_usd"] > 0 and rows[0]["input_tokens"] > 0
        assert server.stats()["answers"] == 24 and server.stats()["duplicate_answers"] == 0
        assert run.stage("generate")["state"] == "done"

        again, _ = run_generate(spec, tmp_path / "runs")
        assert server.stats()["answers"] == 24  # nothing sent twice
        assert again.tally.from_cache == 12 and rows_of(again) == rows


def test_more_records_pay_only_for_the_new_ones(tmp_path):
    with TeacherServer() as server:
        run_generate(write_spec(tmp_path, server.openai_base_url, records=6, json_step=False), tmp_path / "runs")
        result, _ = run_generate(write_spec(tmp_path, server.openai_base_url, records=10, json_step=False), tmp_path / "runs")
        assert result.complete and server.stats()["answers"] == 10 and server.stats()["duplicate_answers"] == 0


def test_every_fault_ends_done_or_failed_with_a_reason(tmp_path):
    with TeacherServer(latency=0.01, hang_seconds=3) as server:
        server.add_fault("rate_limit", times=3, retry_after=0.05)
        server.add_fault("server_error", times=2, status=503)
        server.add_fault("hang", match="#1#", times=1)
        server.add_fault("malformed", match="#2#", times=1)
        server.add_fault("truncate", match="#3#", times=1)
        server.add_fault("refusal", match="#4#", times=1)
        server.add_fault("server_error", match="#5#", times=None, status=500)  # keeps failing
        spec = write_spec(tmp_path, server.openai_base_url, json_step=False, extra_teacher="  timeout_s: 1")
        spec.write_text(spec.read_text().replace("  timeout_s: 5\n", ""))
        result, _ = run_generate(spec, tmp_path / "runs")
        rows = {r["id"]: r for r in rows_of(result)}
        assert len(rows) == 12 and result.complete
        assert rows[3]["status"] == "failed" and "truncated" in rows[3]["failure_reason"]
        assert rows[4]["status"] == "failed" and "refused" in rows[4]["failure_reason"]
        assert rows[5]["status"] == "failed" and "after 4 attempts" in rows[5]["failure_reason"]
        for index in (0, 1, 2, *range(6, 12)):
            assert rows[index]["status"] == "ok", rows[index]["failure_reason"]
        assert result.tally.rate_limited >= 3
        stats = server.stats()
        # Billed answers: one per prompt, except the hung request (answered after the client gave up).
        assert stats["duplicate_answers"] <= 1

        # A re-run does not pay again for the truncated and refused answers, but retries the provider failure.
        before = server.stats()["answers"]
        server.clear_faults()
        again, _ = run_generate(spec, tmp_path / "runs")
        rows = {r["id"]: r for r in rows_of(again)}
        assert rows[5]["status"] == "ok" and rows[3]["status"] == rows[4]["status"] == "failed"
        assert server.stats()["answers"] == before + 1


def test_schema_failure_gets_one_corrective_retry(tmp_path):
    def responder(call):
        if "#2#" in call.text or "#3#" in call.text:  # record 3 never gets it right
            if SCHEMA_CORRECTION.split(":")[0] in call.text and "#2#" in call.text:
                return json.dumps({"name": "fixed", "legs": 4})
            return '{"name": "broken"}'
        return default_answer_text(call)

    with TeacherServer(responder=responder) as server:
        result, _ = run_generate(write_spec(tmp_path, server.openai_base_url, records=5), tmp_path / "runs")
        rows = {r["id"]: r for r in rows_of(result)}
        assert rows[2]["status"] == "ok" and json.loads(rows[2]["steps"])[0]["output"] == {"name": "fixed", "legs": 4}
        assert rows[3]["status"] == "failed" and "after one corrective retry" in rows[3]["failure_reason"]
        assert "legs" in rows[3]["failure_reason"]
        assert server.stats()["duplicate_answers"] == 0


def test_spending_cap_stops_and_a_higher_cap_resumes(tmp_path):
    with TeacherServer() as server:
        spec = write_spec(tmp_path, server.openai_base_url, records=30, json_step=False)
        capped, run = run_generate(spec, tmp_path / "runs", max_cost_usd=0.0002)
        assert capped.tally.stopped_by_cap and not capped.complete and capped.dataset_path is None
        assert "spending cap" in capped.summary and run.stage("generate")["state"] == "failed"
        assert 0 < capped.tally.done < 30
        resumed, run = run_generate(spec, tmp_path / "runs", max_cost_usd=1.0)
        assert resumed.complete and len(rows_of(resumed)) == 30
        assert server.stats()["duplicate_answers"] == 0 and server.stats()["answers"] == 30


def test_shards_merge_into_one_dataset(tmp_path):
    with TeacherServer() as server:
        spec = write_spec(tmp_path / "sharded", server.openai_base_url, records=9, json_step=False)
        first, _ = run_generate(spec, tmp_path / "sharded" / "runs", shard=(0, 2))
        assert not first.complete and first.records == 5
        second, _ = run_generate(spec, tmp_path / "sharded" / "runs", shard=(1, 2))
        assert second.complete
        whole, _ = run_generate(write_spec(tmp_path / "whole", server.openai_base_url, records=9, json_step=False),
                                tmp_path / "whole" / "runs")
        assert rows_of(second) == rows_of(whole)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_mode_with_an_expired_batch(tmp_path, provider):
    with TeacherServer(batch_seconds=0.1) as server:
        base_url = server.openai_base_url if provider == "openai" else server.anthropic_base_url
        model = "gpt-4o-mini" if provider == "openai" else "claude-haiku-4-5"
        server.expire_next_batch(keep=4)  # the first batch finishes only 4 of its 10 requests
        spec = write_spec(tmp_path, base_url, records=10, provider=provider, model=model)
        result, run = run_generate(spec, tmp_path / "runs", mode="batch", batch_poll_s=0.02)
        rows = rows_of(result)
        assert result.complete and {r["status"] for r in rows} == {"ok"}, [r["failure_reason"] for r in rows]
        stats = server.stats()
        assert stats["batch_answers"] == 20 and stats["live_answers"] == 0 and stats["duplicate_answers"] == 0
        book = json.loads((run.path / "generate" / "batches.json").read_text())["batches"]
        assert [b["status"] for b in book][0] == "expired" and len(book) == 3  # facts, facts (rest), stories
        assert all(b["ingested"] for b in book)
        online_price = rows[0]["cost_usd"]
        assert online_price > 0


def test_kill_9_midway_then_resume_equals_an_uninterrupted_run(tmp_path):
    records = 40
    with TeacherServerProcess(latency=0.05) as server:
        spec = write_spec(tmp_path / "killed", server.openai_base_url, records=records, json_step=False)
        script = (f"from pathlib import Path; from distill.spec import load_spec; from distill.rundir import RunDir; "
                  f"from distill.synthesis import generate; l = load_spec({str(spec)!r}); "
                  f"generate(l, RunDir.create(l, root=Path({str(tmp_path / 'killed' / 'runs')!r})), show_progress=False)")
        child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, KEY_ENV: "test-key"})
        log = tmp_path / "killed" / "runs" / "synth-test" / "main" / "generate" / "records.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 10):
            time.sleep(0.02)
        child.kill()
        child.wait()
        assert len(log.read_text().splitlines()) < records, "the run finished before it could be killed"
        resumed, _ = run_generate(spec, tmp_path / "killed" / "runs")
        stats = server.stats()
        assert stats["unique_prompts"] == records
        assert stats["duplicate_answers"] <= 4  # at most the requests in flight at the kill (concurrency 4)

        whole, _ = run_generate(write_spec(tmp_path / "whole", server.openai_base_url, records=records, json_step=False),
                                tmp_path / "whole" / "runs")
        assert rows_of(resumed) == rows_of(whole)


@pytest.mark.parametrize("spec_name, teacher", [("tinystories.yaml", "offline"), ("tinystories-replay.yaml", None)])
def test_tinystories_spec_runs_with_offline_and_replay(tmp_path, spec_name, teacher):
    from distill.synthesis import override_teacher
    from distill.validate import check_spec

    if teacher is None and not (REPO.parent / "shared" / "data" / "tinystories").is_dir():
        pytest.skip("the shared TinyStories sample is not here")
    loaded = override_teacher(check_spec(REPO / "specs" / spec_name).loaded, teacher, 8)
    result = generate(loaded, RunDir.create(loaded, root=tmp_path), show_progress=False)
    rows = rows_of(result)
    assert result.complete and len(rows) == 8 and all(r["status"] == "ok" and len(r["text"]) > 100 for r in rows)
    assert rows[0]["teacher_model"] == ("offline-stand-in" if teacher == "offline" else loaded.spec.teacher.model)


def test_a_retry_after_past_the_bound_fails_the_request_at_once_and_the_next_run_sends_it_again(tmp_path, capsys):
    with TeacherServer() as server:
        server.add_fault("rate_limit", match="#2#", times=1, retry_after=99999)
        spec = write_spec(tmp_path, server.openai_base_url, records=6, json_step=False,
                          extra_teacher="  max_retry_wait_s: 30")
        started = time.monotonic()
        result, _ = run_generate(spec, tmp_path / "runs")
        assert time.monotonic() - started < 30  # not stalled behind the 99,999 s
        rows = {r["id"]: r for r in rows_of(result)}
        assert rows[2]["status"] == "failed", rows[2]
        assert "99,999 s" in rows[2]["failure_reason"] and "teacher.max_retry_wait_s = 30 s" in rows[2]["failure_reason"]
        assert all(rows[i]["status"] == "ok" for i in (0, 1, 3, 4, 5)) and result.tally.rate_limited == 1

        again, _ = run_generate(spec, tmp_path / "runs")  # the failed request is sent again; the rest come from the cache
        assert {r["status"] for r in rows_of(again)} == {"ok"} and again.tally.from_cache == 5


def test_a_retry_after_within_the_bound_is_waited_and_said(tmp_path, capsys):
    with TeacherServer() as server:
        server.add_fault("rate_limit", match="#1#", times=1, retry_after=1.2)
        spec = write_spec(tmp_path, server.openai_base_url, records=3, json_step=False)
        result, _ = run_generate(spec, tmp_path / "runs")
        assert {r["status"] for r in rows_of(result)} == {"ok"} and result.tally.rate_limited == 1
    assert "teacher rate limit (HTTP 429): waiting 1 s as its Retry-After asks" in capsys.readouterr().err


def test_max_retry_wait_is_a_bounded_spec_setting(tmp_path):
    assert load_spec(write_spec(tmp_path, "http://127.0.0.1:9")).spec.teacher.max_retry_wait_s == 60
    for bad in (".nan", "-1", "1e9"):
        spec = write_spec(tmp_path, "http://127.0.0.1:9", extra_teacher=f"  max_retry_wait_s: {bad}")
        with pytest.raises(SpecError, match="max_retry_wait_s"):
            load_spec(spec)
