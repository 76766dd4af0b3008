"""The cold-start loop on a tiny offline spec: captures -> next run's dataset, deletion honoured, drift
report escaped, comparison on held-out real inputs, promotion refused for a worse v2, rollback events."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_bundle import write_tiny_bundle

from distill.coldstart.compare import NamedJudge, compare
from distill.coldstart.drift import drift_report
from distill.coldstart.loop import build_next_run, parse_input
from distill.coldstart.promote import PromotionRefused, promote, read_events, rollback
from distill.errors import ConfigError
from distill.stages import generate_inputs
from distill.providers.offline import OfflineProvider
from distill.rundir import RunDir
from distill.serving.capture import CaptureLog, DeleteRequest
from distill.spec import load_spec
from distill.synthesis import generate

SPEC = r"""
name: tiny-support
description: Replies to smart-lighting customers.
kind: instruct
records: 8
seed: 3
variables:
  channel: {type: choice, items: [email, live chat]}
  issue: {type: choice, items: [a bulb will not pair, the hub is offline, the app crashes]}
steps:
  - name: customer_message
    user: "Write a customer's message on {{ channel }} about this problem: {{ issue }}."
  - name: reply
    user: "A customer wrote on {{ channel }}: {{ steps.customer_message }} Write our reply."
student_input: "Channel: {{ channel }}\nCustomer: {{ steps.customer_message }}"
teacher: {provider: offline, model: offline-stand-in}
coldstart:
  input_step: customer_message
  input_pattern: "Channel: (?P<channel>[^\\n]*)\\nCustomer: (?P<customer_message>.*)"
  real_share: 0.5
  held_out: 0.25
"""

REAL = [
    "hi my lamp in the kitchen blinks red since the update yesterday, is it broken?? pls help",
    "Hallo, die Lampe im Flur verbindet sich nicht mit dem Hub. Was soll ich tun?",
    "I want to cancel my subscription and get my money back, I was charged twice this month",
    "the app keeps logging me out every time i open it on my ipad, really annoying",
    "how do i share access to my lights with my roommate without giving her my password",
    "my email is sam.porter@gmail.com, please send me the invoice for order 5531 <script>x</script>",
    "bulbs turn on by themselves at 3am. haunted?? or a schedule i forgot",
    "Bonjour, mon hub ne s'allume plus du tout depuis la coupure de courant",
]


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coldstart")
    (root / "spec.yaml").write_text(SPEC)
    loaded = load_spec(root / "spec.yaml")
    run = RunDir.create(loaded, root=root / "runs", run_id="v1")
    generate(loaded, run, show_progress=False)
    return run.path


def write_captures(path: Path) -> dict[str, str]:
    """Captures as serve-model writes them; returns request id -> customer message."""
    log = CaptureLog(path, rate=1.0)
    ids = {}
    for i, message in enumerate([*REAL, REAL[0].upper(), "no channel line at all"]):
        content = message if message.startswith("no channel") else f"Channel: live chat\nCustomer: {message}"
        log.record(f"chatcmpl-{i}", "chat.completions", "tiny-support-0.1.0",
                   {"messages": [{"role": "user", "content": content}]}, ["some reply"])
        ids[f"chatcmpl-{i}"] = message
    return ids


def real_texts(run: Path) -> str:
    return (run / "coldstart" / "real_inputs.jsonl").read_text() + (run / "coldstart" / "heldout.jsonl").read_text()


def test_parse_input_reads_the_step_and_variables():
    from distill.spec import ColdStart

    settings = ColdStart(input_step="customer_message", input_pattern=r"Channel: (?P<channel>[^\n]*)\nCustomer: (?P<customer_message>.*)",
                         defaults={"mood": "calm"})
    assert parse_input("Channel: email\nCustomer: it broke\nagain", settings) == (
        {"mood": "calm", "channel": "email"}, {"customer_message": "it broke\nagain"})
    assert parse_input("just text", settings) is None


def test_next_run_mixes_relabelled_real_inputs_with_synthetic_records(v1_run, tmp_path):
    captures = tmp_path / "captures.jsonl"
    write_captures(captures)
    result = build_next_run(v1_run, captures, run_id="v2", show_progress=False)
    counts = result.counts
    assert counts["captured"] == 10 and counts["unique"] == 9  # the upper-cased repeat is a duplicate
    assert counts["unparsed"] == 1  # the message without the student-input layout
    assert counts["real_train"] + counts["held_out"] == counts["relabelled"] == 8
    assert counts["held_out"] == 2 and counts["synthetic"] == counts["real_train"]  # real_share 0.5

    import datasets

    rows = list(datasets.load_from_disk(str(result.run / "dataset")))
    real = [r for r in rows if r["id"] >= 1_000_000_000]
    assert len(real) == counts["real_train"] and all(r["prompt"].startswith("Channel: live chat\nCustomer: ") for r in real)
    assert all(r["text"] and r["status"] == "ok" for r in rows)  # the teacher answered the later step
    heldout = [json.loads(line) for line in (result.run / "coldstart" / "heldout.jsonl").read_text().splitlines()]
    assert {h["id"] for h in heldout}.isdisjoint(r["id"] for r in rows)
    assert "sam.porter@gmail.com" not in real_texts(result.run)  # redacted at capture, reviewed again

    lineage = json.loads((result.run / "coldstart" / "lineage.json").read_text())
    from distill.rundir import file_sha256

    assert lineage["parent_run"] == str(v1_run) and lineage["captures"]["sha256"] == file_sha256(captures)
    run = RunDir.open(result.run)
    assert run.manifest["lineage"]["parent_run"] == str(v1_run)
    assert run.stale_reasons("generate", generate_inputs(result.run, run.load_spec())) == []  # `distill run` goes on

    # the drift report: numbers, charts, and user text escaped
    html = drift_report(result.run).read_text()
    assert "<script>x</script>" not in html and "data:image/png;base64," in html
    stats = json.loads((result.run / "coldstart" / "drift.json").read_text())
    assert stats["mean_words"]["real"] > 0 and 0 <= stats["js_words"] <= 1
    assert stats["foreign_share"] > 0 and stats["variables"]["channel"]


def test_deleted_captures_are_absent_from_the_next_loop(v1_run, tmp_path):
    captures = tmp_path / "captures.jsonl"
    ids = write_captures(captures)
    doomed = "chatcmpl-3"
    assert CaptureLog(captures).delete(DeleteRequest(request_ids=[doomed])) == 1
    result = build_next_run(v1_run, captures, run_id="v2-after-delete", show_progress=False)
    assert ids[doomed] not in real_texts(result.run)
    import datasets

    prompts = [r["prompt"] for r in datasets.load_from_disk(str(result.run / "dataset"))]
    assert not any(ids[doomed] in p for p in prompts)
    assert result.counts["relabelled"] == 7


def test_a_spec_without_coldstart_is_refused(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC.split("coldstart:")[0])
    loaded = load_spec(tmp_path / "spec.yaml")
    run = RunDir.create(loaded, root=tmp_path / "runs", run_id="v1")
    captures = tmp_path / "c.jsonl"
    write_captures(captures)
    with pytest.raises(ConfigError, match="coldstart"):
        build_next_run(run.path, captures, show_progress=False)


# --- compare and promote ---


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    good = write_tiny_bundle(root / "tiny-support-0.1.0", version="0.1.0")
    worse = root / "tiny-support-0.2.0"
    shutil.copytree(good, worse)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(worse)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # confidently wrong: far higher bits per byte
    model.save_pretrained(worse)
    manifest = json.loads((worse / "manifest.json").read_text())
    from distill.release.bundle import bundle_files

    (worse / "manifest.json").unlink()
    manifest.update(version="0.2.0", files=bundle_files(worse))
    (worse / "manifest.json").write_text(json.dumps(manifest))
    return good, worse


def heldout_file(tmp_path: Path) -> Path:
    path = tmp_path / "heldout.jsonl"
    rows = [{"id": i, "prompt": f"Channel: email\nCustomer: {m}", "text": "Once upon a time there was a little cat.",
             "input": m} for i, m in enumerate(REAL[:3])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_worse_v2_is_not_promoted_and_switches_are_events(bundles, tmp_path):
    good, worse = bundles
    judge = NamedJudge(OfflineProvider(), "offline-stand-in")
    report = compare(good, worse, heldout_file(tmp_path), judge, max_new_tokens=6)
    assert report["v2"]["bits_per_byte"] > report["v1"]["bits_per_byte"] and not report["v2_better"]
    assert report["judgements"] == 6 and 0 <= report["win_rate_v2"]["mean"] <= 1  # 3 inputs x both orders
    assert report["v1"]["grade"]["n"] == 3
    (tmp_path / "compare.json").write_text(json.dumps(report))

    deployment = tmp_path / "deployment.json"
    promote(deployment, good, name="tiny-support")
    with pytest.raises(PromotionRefused, match="not better"):
        promote(deployment, worse, comparison=tmp_path / "compare.json")
    assert [r["model"] for r in json.loads(deployment.read_text())["routes"]] == ["tiny-support-0.1.0"]

    split = promote(deployment, worse, percent=10, comparison=tmp_path / "compare.json", force="canary on purpose")
    assert [(r["model"], r["percent"]) for r in split["routes"]] == [("tiny-support-0.1.0", 90), ("tiny-support-0.2.0", 10)]
    back = rollback(deployment)
    assert [(r["model"], r["percent"]) for r in back["routes"]] == [("tiny-support-0.1.0", 100)]
    events = read_events(deployment)
    assert [e["action"] for e in events] == ["create", "split", "rollback"]
    assert events[1]["reason"] == "canary on purpose" and events[1]["to"] == ["tiny-support-0.1.0:90%", "tiny-support-0.2.0:10%"]

    swapped = compare(worse, good, heldout_file(tmp_path), NamedJudge(OfflineProvider(), "offline-stand-in"),
                      max_new_tokens=6)
    assert swapped["v2"]["bits_per_byte"] < swapped["v1"]["bits_per_byte"]


def test_a_bundle_whose_gate_was_overridden_is_refused(bundles, tmp_path):
    good, _ = bundles
    copy = shutil.copytree(good, tmp_path / "overridden")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["gate"] = {"passed": False, "override": {"reason": "smoke test"}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PromotionRefused, match="gate"):
        promote(tmp_path / "deployment.json", copy)


def test_the_example_beta_traffic_parses_with_the_shipped_support_specs():
    """examples/coldstart: every beta message, laid out as drive_beta.py sends it, reads back through
    the support specs' coldstart pattern (the YAML escaping of the regex included)."""
    repo = Path(__file__).resolve().parents[1]
    lines = [json.loads(line) for line in (repo / "examples/coldstart/beta_traffic.jsonl").read_text().splitlines()]
    assert len(lines) >= 40 and len({line["message"] for line in lines}) == len(lines)
    for name in ("support.yaml", "support-beta.yaml"):
        spec = load_spec(repo / "specs" / name).spec
        channels = set(spec.variables["channel"].weights)
        for line in lines:
            assert line["channel"] in channels
            parsed = parse_input(f"Channel: {line['channel']}\nCustomer: {line['message']}", spec.coldstart)
            assert parsed == ({"channel": line["channel"]}, {"customer_message": line["message"].strip()})
