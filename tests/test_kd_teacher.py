"""Teachers that return probabilities: log-probs through the real `openai` SDK against the loopback teacher
server and against `distill serve-model`, kept compactly in the answer cache and the dataset, through kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import openai
import pytest
from tiny_bundle import LoopbackServer, write_tiny_bundle

from distill.providers.logprobs import TokenLogprobs, token_bytes_table
from distill.rundir import RunDir
from distill.serving.api import create_app
from distill.serving.server import open_bundle
from distill.spec import load_spec
from distill.synthesis import generate
from distill.synthesis.cache import AnswerCache
from tests.teacher_server import TeacherServer, TeacherServerProcess

KEY_ENV = "DISTILL_TEST_TEACHER_KEY"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")


def write_spec(folder: Path, base_url: str, *, provider: str = "openai", model: str = "gpt-4o-mini",
               records: int = 6, top_k: int = 5, params: str = "{max_tokens: 200}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(f"""
name: kd-test
kind: text
records: {records}
variables:
  animal: {{type: choice, items: [fox, bear, owl, cat]}}
steps:
  - name: story
    user: "Story about a {{{{ animal }}}}. #{{{{ record_index }}}}#"
teacher:
  provider: {provider}
  model: {model}
  base_url: {base_url}
  api_key_env: {KEY_ENV}
  concurrency: 4
  timeout_s: 10
  max_retries: 2
  params: {params}
training:
  distillation: {{weight: 1.0, temperature: 1.0, top_k: {top_k}}}
""")
    return folder / "spec.yaml"


def run_generate(spec: Path, root: Path):
    loaded = load_spec(spec)
    run = RunDir.create(loaded, root=root)
    return generate(loaded, run, show_progress=False, backoff_base_s=0.01), run


def rows_of(result) -> list[dict]:
    return list(datasets.load_from_disk(str(result.dataset_path)))


def test_openai_teacher_logprobs_reach_the_dataset_compactly(tmp_path):
    with TeacherServer() as server:
        result, run = run_generate(write_spec(tmp_path, server.openai_base_url), tmp_path / "runs")
    rows = rows_of(result)
    assert rows and all(r["status"] == "ok" for r in rows)
    for row in rows:
        stored = TokenLogprobs.from_json(row["teacher_logprobs"])
        assert stored.text_bytes == row["text"].encode()  # the tokens spell exactly the training text
        assert stored.k == 5 and stored.top_logprobs.dtype == np.float16
        assert stored.top_tokens[0][0] == stored.tokens[0]  # the teacher's own token leads its top-k
        expected = -0.05 - 0.1 * (len(stored.tokens[0]) % 7)  # the loopback server's log-probability
        assert abs(float(stored.logprobs[0]) - expected) < 1e-3
        assert 0 <= float(stored.rest_mass()[0]) < 1
        assert len(row["teacher_logprobs"]) < 12 * stored.k * len(stored) + 600  # ~10 bytes an alternative (OpenAI: ~60)


def test_anthropic_teacher_falls_back_to_text_and_says_so(tmp_path, capsys):
    with TeacherServer() as server:
        spec = write_spec(tmp_path, server.anthropic_base_url, provider="anthropic", model="claude-haiku-4-5")
        result, run = run_generate(spec, tmp_path / "runs")
    assert all(r["teacher_logprobs"] == "" and r["text"] for r in rows_of(result))
    said = capsys.readouterr().err
    assert "spec.yaml: training.distillation: the anthropic teacher returns no token log-probabilities" in said
    stage = RunDir.open(run.path).manifest["stages"]["generate"]
    assert "text only" in stage["counts"]["distillation"]


def test_cache_keeps_the_distribution_and_the_log_rebuilds_it(tmp_path):
    with TeacherServer() as server:
        result, run = run_generate(write_spec(tmp_path, server.openai_base_url, records=3), tmp_path / "runs")
    generate_dir = run.path / "generate"
    before = rows_of(result)
    for path in generate_dir.glob("cache.sqlite*"):
        path.unlink()  # a lost cache is rebuilt from the records log, distributions included
    again, _ = run_generate(write_spec(tmp_path, "http://127.0.0.1:9/v1", records=3), tmp_path / "runs")
    assert rows_of(again) == before
    cache = AnswerCache(next(generate_dir.glob("cache.sqlite")))
    keys = [k for (k,) in cache._db.execute("SELECT key FROM answers")]
    assert all(cache.get(k).reply.logprobs is not None for k in keys)


def test_kill_9_mid_generation_keeps_every_records_distribution(tmp_path):
    records = 30
    with TeacherServerProcess(latency=0.05) as server:
        spec = write_spec(tmp_path / "killed", server.openai_base_url, records=records)
        script = (f"from pathlib import Path; from distill.spec import load_spec; from distill.rundir import RunDir; "
                  f"from distill.synthesis import generate; l = load_spec({str(spec)!r}); "
                  f"generate(l, RunDir.create(l, root=Path({str(tmp_path / 'killed' / 'runs')!r})), show_progress=False)")
        child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, KEY_ENV: "test-key"},
                                 stderr=subprocess.DEVNULL)
        log = tmp_path / "killed" / "runs" / "kd-test" / "main" / "generate" / "records.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 8):
            time.sleep(0.02)
        child.kill()
        child.wait()
        assert len(log.read_text().splitlines()) < records, "the run finished before it could be killed"
        resumed, _ = run_generate(spec, tmp_path / "killed" / "runs")
        whole, _ = run_generate(write_spec(tmp_path / "whole", server.openai_base_url, records=records),
                                tmp_path / "whole" / "runs")
    rows = rows_of(resumed)
    assert len(rows) == records and all(r["teacher_logprobs"] for r in rows)
    assert [r["teacher_logprobs"] for r in rows] == [r["teacher_logprobs"] for r in rows_of(whole)]


# --- distill serve-model as the teacher ---


@pytest.fixture(scope="module")
def served_bundle(tmp_path_factory):
    bundle = write_tiny_bundle(tmp_path_factory.mktemp("teacher") / "tiny-teacher-0.1.0", name="tiny-teacher")
    model = open_bundle(bundle)
    with LoopbackServer(create_app([model])) as server:
        yield bundle, server, model
    model.engine.close()


def spelled(content) -> bytes:
    return b"".join(bytes(item.bytes) for item in content)


def test_serve_model_returns_each_tokens_exact_bytes_and_top_logprobs(served_bundle):
    bundle, server, model = served_bundle
    client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "Once upon a time"}]
    reply = client.chat.completions.create(model="tiny-teacher-0.1.0", messages=messages, max_tokens=24, seed=3,
                                           temperature=1.0, logprobs=True, top_logprobs=20)
    content = reply.choices[0].logprobs.content
    table = token_bytes_table(model.tokenizer)
    assert len(content) >= 1 and all(len(item.top_logprobs) == 20 for item in content)
    assert all(bytes(item.bytes) in table for item in content)
    text = reply.choices[0].message.content
    assert spelled(content).decode("utf-8", "replace").rstrip("\ufffd") == text.rstrip("\ufffd")
    for item in content:
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True) and item.logprob <= values[0] + 1e-6
    stream = client.chat.completions.create(model="tiny-teacher-0.1.0", messages=messages, max_tokens=24, seed=3,
                                            temperature=1.0, logprobs=True, top_logprobs=20, stream=True)
    streamed = [item for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                for item in chunk.choices[0].logprobs.content]
    assert spelled(streamed) == spelled(content)
    assert [i.logprob for i in streamed] == pytest.approx([i.logprob for i in content])


def test_serve_model_teacher_through_the_openai_provider_fills_the_dataset(tmp_path, served_bundle):
    bundle, server, model = served_bundle
    spec = write_spec(tmp_path, server.url, model="tiny-teacher-0.1.0", records=4, top_k=20,
                      params='{max_tokens: 120, stop: [".", "e"]}')  # a random model stops at a stop string
    result, _ = run_generate(spec, tmp_path / "runs")
    rows = [r for r in rows_of(result) if r["status"] == "ok"]
    carried = [TokenLogprobs.from_json(r["teacher_logprobs"]) for r in rows if r["teacher_logprobs"]]
    assert carried, "no record kept the served teacher's distribution"
    table = set(token_bytes_table(model.tokenizer))
    assert all(t in table for stored in carried for row in stored.top_tokens for t in row)
    assert all(stored.k == 20 for stored in carried)
    assert json.loads(rows[0]["steps"])[0]["output"] == rows[0]["text"]
