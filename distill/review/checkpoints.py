"""Signed checkpoints of the review's audit log: an anchor that a rewrite of the whole log cannot reach.

The hash chain (`audit.py`) shows a line edited, removed, inserted or reordered, but whoever can write the run
directory can rewrite the whole log, recompute every hash and `audit.head`, and leave an intact chain. So every
sign-off (accepted or refused) appends a checkpoint to `review/audit.checkpoints.jsonl`: the head at that moment
(entry count and last hash), signed with the operator's Ed25519 key, the one releases are signed with
(`$DISTILL_SIGNING_KEY`). The private key never enters the run, so nobody who holds only the run can write a
checkpoint that verifies under the operator's public key, and a release signed with that key refuses a sign-off
no checkpoint of that key covers.

Checked against the public key, a checkpoint proves that entries 1..count are exactly the ones the key holder's
sign-off saw. It proves nothing about entries after the last checkpoint, and nothing about who typed an entry
(the reviewer names are what the tools were told).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.files import append_jsonl, read_jsonl
from distill import signing
from distill.review.audit import LOG, _complete_size, verify_log

CHECKPOINTS = "audit.checkpoints.jsonl"


@dataclass
class Anchor:
    """What the checkpoints say about the log as it is now."""

    problems: list[str] = field(default_factory=list)  # checkpoints the log no longer matches, forged signatures
    checkpoints: int = 0  # checkpoints that hold
    anchored: int = 0  # entries covered by the latest checkpoint that holds
    signed_by: str | None = None  # the fingerprint the signatures verified under (None: not checked)


def checkpoint_key() -> Any | None:
    """The operator's private key ($DISTILL_SIGNING_KEY), or None: then sign-offs are not checkpointed."""
    return signing.signing_key_from(None)


def logged_hashes(review_dir: Path) -> list[str | None]:
    """Each complete line's hash, in order (None for a line that is not an entry: verify_log names it)."""
    log = review_dir / LOG
    if not log.exists():
        return []
    hashes = []
    for line in log.read_bytes()[:_complete_size(log)].decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            entry = None
        hashes.append(entry.get("hash") if isinstance(entry, dict) else None)
    return hashes


def _signed_part(checkpoint: dict[str, Any]) -> bytes:
    body = {k: checkpoint.get(k) for k in ("count", "hash", "time", "signed_by")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def write_checkpoint(review_dir: Path, entry: dict[str, Any], private_key: Any | None) -> dict[str, Any] | None:
    """Sign the head that `entry` (just appended) makes, when the operator's key is at hand."""
    if private_key is None:
        return None
    checkpoint = {"count": entry["seq"] + 1, "hash": entry["hash"], "time": entry["time"],
                  "signed_by": signing.key_fingerprint(private_key.public_key())}
    checkpoint["signature"] = signing.sign(_signed_part(checkpoint), private_key).decode().strip()
    append_jsonl(review_dir / CHECKPOINTS, [checkpoint])
    return checkpoint


def check_checkpoints(review_dir: Path, public_key: Any | None = None) -> Anchor:
    """Every checkpoint must name the head the log has at its position; with `public_key`, its signature must
    verify too (without one, a checkpoint proves only that whoever rewrote the log did not also rewrite it)."""
    path = review_dir / CHECKPOINTS
    hashes = logged_hashes(review_dir)
    anchor = Anchor(signed_by=signing.key_fingerprint(public_key) if public_key is not None else None)
    for number, checkpoint in enumerate(read_jsonl(path), 1):
        count = checkpoint.get("count") if isinstance(checkpoint, dict) else None
        if not isinstance(count, int) or not isinstance(checkpoint.get("hash"), str):
            anchor.problems.append(f"{path}:{number}: not a checkpoint (count and hash)")
        elif not 1 <= count <= len(hashes) or hashes[count - 1] != checkpoint["hash"]:
            anchor.problems.append(f"{path}:{number}: the log's entry {count} is not the head this checkpoint "
                                   f"recorded ({checkpoint['hash'][:12]}...): the log was rewritten or cut after it")
        elif public_key is not None and not signing.signature_holds(
                public_key, str(checkpoint.get("signature", "")), _signed_part(checkpoint)):
            anchor.problems.append(f"{path}:{number}: the signature does not verify under the operator's key "
                                   "(a forged checkpoint)")
        else:
            anchor.checkpoints += 1
            anchor.anchored = max(anchor.anchored, count)
    return anchor


def signoff_anchor_problems(review_dir: Path, signoff: dict[str, Any], public_key: Any | None) -> list[str]:
    """The checkpoints' problems, and with the operator's key: the sign-off's entry must be covered by a
    checkpoint that verifies under it."""
    anchor = check_checkpoints(review_dir, public_key)
    if public_key is None or anchor.problems:
        return anchor.problems
    position = next((i + 1 for i, h in enumerate(logged_hashes(review_dir)) if h == signoff.get("log_hash")), 0)
    if anchor.anchored < position or not position:
        return [f"{review_dir / CHECKPOINTS}: no checkpoint signed with the release key ({anchor.signed_by}) covers "
                f"the sign-off (audit entry {position}), so the review history cannot be told from a rewrite: "
                "sign off again with DISTILL_SIGNING_KEY set to that key"]
    return []


def log_report(review_dir: Path, public_key: Any | None = None) -> tuple[list[str], list[str]]:
    """(problems, what the check proves and what it cannot) for `distill review RUN --verify-log`."""
    problems = verify_log(review_dir)
    anchor = check_checkpoints(review_dir, public_key)
    entries = len(logged_hashes(review_dir))
    lines = [f"hash chain: {'intact' if not problems else 'BROKEN'} over {entries} entries. An intact chain proves no "
             "entry was edited, removed, inserted or reordered unless every later hash and audit.head were rewritten "
             "too; it cannot tell a log rewritten and re-chained as a whole."]
    if not anchor.checkpoints:
        lines.append("checkpoints: none hold, so nothing here anchors the head: a re-chained log would look intact "
                     "(sign off with DISTILL_SIGNING_KEY set to checkpoint it; a released manifest anchors its head too)")
    elif anchor.signed_by is None:
        lines.append(f"checkpoints: {anchor.checkpoints} match the log, up to entry {anchor.anchored}; their signatures "
                     "were NOT checked, so they prove nothing against someone who rewrote them too: pass --key PUB "
                     "(the operator's public key)")
    else:
        lines.append(f"checkpoints: {anchor.checkpoints} match the log and verify under {anchor.signed_by}: entries "
                     f"1-{anchor.anchored} are exactly what the key holder signed")
    if anchor.checkpoints and entries > anchor.anchored:
        lines.append(f"entries {anchor.anchored + 1}-{entries} come after the last checkpoint: not anchored")
    lines.append("not proven by any check: who typed an entry (reviewer names are what the tools were told)")
    return problems + anchor.problems, lines
