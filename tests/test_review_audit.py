"""The audit log is hash-chained: any edit, deletion, insertion or reordering of a past line is detected."""

from __future__ import annotations

import json

import pytest

from distill.review.audit import LOG, append_entry, read_log, verify_log


@pytest.fixture
def log_dir(tmp_path):
    for index in range(4):
        append_entry(tmp_path, reviewer="ana", action="reject", ids=[index], before={"status": "pending"}, after={"decision": "reject"})
    return tmp_path


def lines(folder):
    return (folder / LOG).read_text().splitlines()


def write(folder, new_lines):
    (folder / LOG).write_text("\n".join(new_lines) + "\n")


def test_an_untouched_log_verifies_and_keeps_who_what_when(log_dir):
    assert verify_log(log_dir) == []
    entries = read_log(log_dir)
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert entries[2]["reviewer"] == "ana" and entries[2]["ids"] == [2] and entries[2]["before"] == {"status": "pending"}
    assert entries[1]["prev"] == entries[0]["hash"] and entries[0]["time"].endswith("+00:00")


def test_editing_a_past_line_is_detected(log_dir):
    old = lines(log_dir)
    entry = json.loads(old[1])
    entry["reviewer"] = "mallory"
    write(log_dir, [old[0], json.dumps(entry, sort_keys=True), *old[2:]])
    assert any(":2: content does not match its hash" in p for p in verify_log(log_dir))


def test_deleting_reordering_or_truncating_is_detected(log_dir):
    old = lines(log_dir)
    write(log_dir, [old[0], *old[2:]])
    assert any(":2:" in p and "sequence" in p for p in verify_log(log_dir))
    write(log_dir, [old[1], old[0], *old[2:]])
    assert verify_log(log_dir)
    write(log_dir, old[:3])
    assert any("head" in p for p in verify_log(log_dir))


def test_rehashing_a_forged_line_still_breaks_the_chain(log_dir):
    import hashlib

    old = lines(log_dir)
    entry = json.loads(old[1])
    entry["after"] = {"decision": "accept"}
    del entry["hash"]
    body = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    entry["hash"] = hashlib.sha256((entry["prev"] + body).encode()).hexdigest()
    write(log_dir, [old[0], json.dumps(entry, sort_keys=True), *old[2:]])
    problems = verify_log(log_dir)
    assert any(":3: does not chain" in p for p in problems)
