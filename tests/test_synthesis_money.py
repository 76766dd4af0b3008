"""Money: a hard spending cap at concurrency 32, a lost cache that is rebuilt instead of bought again,
a run that stops when every request fails the same way, and API keys that never reach a file."""

from __future__ import annotations

import json

import pytest
from conftest import run_distill
from test_synthesis_generate import KEY_ENV, run_generate, write_spec

from distill.errors import ConfigError
from distill.synthesis.progress import usd
from tests.teacher_server import TeacherServer

PRICES = "openai: {gpt-4o-mini: {input: 0.15, output: 0.60}}\n"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key-0123456789abcdef")


def test_the_cap_is_never_exceeded_at_concurrency_32(tmp_path):
    (tmp_path / "prices.yaml").write_text(PRICES)
    cap = 0.0003
    with TeacherServer(latency=0.05) as server:
        spec = write_spec(tmp_path, server.openai_base_url, records=120, json_step=False)
        spec.write_text(spec.read_text().replace("concurrency: 4", "concurrency: 32"))
        result, run = run_generate(spec, tmp_path / "runs", max_cost_usd=cap, prices_path=tmp_path / "prices.yaml")
        stats = server.stats()
    assert result.tally.stopped_by_cap and not result.complete
    assert 0 < result.spent_total_usd <= cap, result.spent_total_usd
    assert result.tally.done > 1  # the cap allows several records; it is reached, not refused up front
    billed = sum(json.loads(line)["cost_usd"] for line in (run.path / "generate" / "records.jsonl").open())
    assert billed <= cap and stats["answers"] == result.tally.done
    assert "$0.0003 cap" in result.summary  # printed with the digits that matter, not "$0.00"


@pytest.mark.parametrize("cap", [0.0, -1.0, float("nan")])
def test_a_cap_of_zero_or_less_is_refused(tmp_path, cap):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", records=2)
    with pytest.raises(ConfigError, match="spending cap must be more than"):
        run_generate(spec, tmp_path / "runs", max_cost_usd=cap)


def test_usd_keeps_the_digits_that_matter():
    assert [usd(v) for v in (0.0003, 0.0015, 0.5, 12.5, 1234.5)] == ["$0.0003", "$0.0015", "$0.50", "$12.50", "$1,234.50"]


@pytest.mark.parametrize("damage", ["garbage", "empty", "deleted"])
def test_a_lost_cache_is_rebuilt_from_the_records_log_not_bought_again(tmp_path, damage, capsys):
    with TeacherServer() as server:
        spec = write_spec(tmp_path, server.openai_base_url, records=8)
        first, run = run_generate(spec, tmp_path / "runs")
        assert first.complete
        bought = server.stats()["answers"]
        cache = run.path / "generate" / "cache.sqlite"
        for suffix in ("-wal", "-shm"):
            (cache.parent / f"cache.sqlite{suffix}").unlink(missing_ok=True)
        if damage == "garbage":
            cache.write_bytes(b"this is not a database" * 100)
        elif damage == "empty":
            cache.write_bytes(b"")
        else:
            cache.unlink()
        again, _ = run_generate(spec, tmp_path / "runs")
        assert again.complete and server.stats()["answers"] == bought  # nothing bought twice
    assert again.spent_total_usd == pytest.approx(first.spent_total_usd)  # spending is not reset
    err = capsys.readouterr().err
    assert "restored 16 answers from the records log" in err
    if damage == "garbage":
        assert "is corrupt" in err and list(cache.parent.glob("cache.corrupt-*.sqlite"))


def test_every_request_failing_the_same_way_stops_after_a_few(tmp_path):
    with TeacherServer() as server:
        server.add_fault("server_error", status=401, times=None)
        spec = write_spec(tmp_path, server.openai_base_url, records=40, json_step=False)
        result = run_distill("generate", spec, "--runs-dir", tmp_path / "runs", env={KEY_ENV: "sk-proj-" + "A1b2" * 8})
        sent = server.stats()["completion_requests"]
    assert result.returncode == 2, result.stderr
    assert "failed the same way" in result.stderr and "HTTP 401" in result.stderr
    assert sent <= 3 + 4  # the limit, plus what the other workers had in flight
    assert "Traceback" not in result.stderr
    assert "A1b2A1b2" not in result.stderr  # the echoed key is redacted
    log = (tmp_path / "runs" / "synth-test" / "main" / "generate" / "records.jsonl")
    assert "A1b2A1b2" not in (log.read_text() if log.exists() else "")
    assert "[REDACTED]" in result.stderr or not log.exists()


def test_an_echoed_key_is_redacted_from_failure_reasons(tmp_path, monkeypatch):
    key = "sk-proj-" + "Z9y8" * 8
    monkeypatch.setenv(KEY_ENV, key)
    with TeacherServer() as server:
        server.add_fault("server_error", status=401, times=1)  # one record fails; the rest succeed
        spec = write_spec(tmp_path, server.openai_base_url, records=4, json_step=False)
        result, run = run_generate(spec, tmp_path / "runs")
    failed = [json.loads(line) for line in (run.path / "generate" / "records.jsonl").open()
              if json.loads(line)["status"] == "failed"]
    assert len(failed) == 1 and "[REDACTED]" in failed[0]["failure_reason"]
    assert key not in (run.path / "generate" / "records.jsonl").read_text()


def test_an_api_key_env_holding_a_key_is_refused_without_printing_it(tmp_path):
    key = "sk-proj-" + "Q7w6" * 8
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", records=2)
    spec.write_text(spec.read_text().replace(f"api_key_env: {KEY_ENV}", f"api_key_env: {key}"))
    result = run_distill("generate", spec, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert key not in result.stderr + result.stdout and "credential" in result.stderr
    assert not (tmp_path / "runs" / "synth-test").exists()  # nothing was copied into a run


def test_a_key_anywhere_in_the_spec_text_is_refused_before_the_run_is_made(tmp_path):
    key = "sk-ant-api03-" + "k" * 40
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", records=2)
    spec.write_text(spec.read_text() + f"# old key: {key}\n")
    result = run_distill("generate", spec, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and key not in result.stderr
    assert f"{spec}:{spec.read_text().count(chr(10))}" in result.stderr and "Anthropic API key" in result.stderr
    assert not (tmp_path / "runs" / "synth-test").exists()
