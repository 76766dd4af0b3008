"""How well the cheap chain generalises: recall with the right reason code and false positives, per
family of hand-written cases (`tests/data/safety_families/`), measured on the half not tuned on.

Within each kind, families alternate between half A and half B in file order. Swap 1 tunes on A and
reports B; swap 2 tunes on B and reports A. A case counts as caught when a finding carries one of the
family's expected codes (or a code under an expected prefix) and the policy does not let it pass.
Reworded duplicates run through the corpus dedup stage with the policy's settings, next to distinct
records of one template (whose false-duplicate rate is reported too). Clean families are checked under
every shipped policy: "detector" counts findings of the personal-data, secret, injection, toxicity,
offensive-language and lexicon stages; "any" counts every finding a policy does not pass (quality and
conformance included). Clean stories from the shared TinyStories sample are checked the same way.

    .venv/bin/python benchmarks/safety_generalisation.py [--policy general] [--half A|B] [--misses] [--folder DIR] [--stories N]
"""

from __future__ import annotations

import argparse
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from distill.paths import data_path
from distill.review.chain import Chain
from distill.review.dedup import find_duplicates
from distill.review.policy import Policy, load_policy

FAMILIES = Path(__file__).resolve().parents[1] / "tests" / "data" / "safety_families"
STORIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"
DETECTOR_STAGES = ("pii", "secrets", "injection", "toxicity", "offensive", "lexicon")
KINDS = ("pii", "secrets", "toxicity", "injection", "duplicates", "clean")


@dataclass(frozen=True)
class Family:
    kind: str
    name: str
    half: str
    expect: tuple[str, ...]  # empty: clean
    cases: tuple


def load_families(folder: Path = FAMILIES) -> list[Family]:
    families = []
    for path in sorted(folder.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for index, entry in enumerate(document["families"]):
            expect = () if entry["expect"] == "clean" else tuple(entry["expect"])
            kind = entry.get("kind", document["kind"])  # a file may mix kinds, each family naming its own
            families.append(Family(kind, entry["name"], "AB"[index % 2], expect, tuple(entry["cases"])))
    return families


def shipped_policies() -> list[str]:
    return sorted(p.stem for p in data_path("safety").glob("*.yaml"))


def _matches(code: str, expect: tuple[str, ...]) -> bool:
    return any(code == e or code.startswith(e + ".") for e in expect)


def caught(chain: Chain, text: str, expect: tuple[str, ...]) -> bool:
    return any(_matches(f.code, expect) and f.action != "pass" for f in chain.check(text).reasons)


def flagged(chain: Chain, text: str, detectors_only: bool) -> list[str]:
    findings = [f for f in chain.check(text).reasons if f.action != "pass"]
    if detectors_only:
        findings = [f for f in findings if f.stage in DETECTOR_STAGES]
    return [f.code for f in findings]


def template_records(count: int = 200, seed: int = 0) -> list[str]:
    """Distinct stories from one template: they share most words by design and are not duplicates."""
    rng = random.Random(seed)
    names = ["Mia", "Tom", "Lily", "Ben", "Zoe", "Sam", "Ana", "Max", "Eva", "Leo", "Ivy", "Noah"]
    animals = ["cat", "dog", "duck", "frog", "bunny", "bear", "fox", "owl", "pig", "hen", "goat", "mouse"]
    places = ["park", "garden", "beach", "farm", "forest", "pond", "hill", "zoo", "yard", "river"]
    things = ["ball", "kite", "hat", "box", "boat", "drum", "cake", "book", "shell", "cup"]
    colours = ["red", "blue", "green", "yellow", "pink", "big", "small", "shiny", "old", "new"]
    feelings = ["happy", "sad", "scared", "proud", "tired", "excited", "angry", "calm"]
    seen, records = set(), []
    while len(records) < count:
        n, a, p, t, c, f = (rng.choice(x) for x in (names, animals, places, things, colours, feelings))
        a2, t2 = rng.choice(animals), rng.choice(things)
        if (n, a, p, t, c, f, a2, t2) in seen:
            continue
        seen.add((n, a, p, t, c, f, a2, t2))
        records.append(f"Once upon a time, {n} went to the {p} with a {c} {t}. There {n} met a little {a}. "
                       f"The {a} was {f} because it had lost its {t2}. {n} and the {a} looked everywhere. "
                       f"At last a {a2} helped them find it, and they all played until the sun went down.")
    return records


def duplicate_recall(policy: Policy, family: Family, distractors: list[str]) -> tuple[int, int]:
    originals = [pair[0] for pair in family.cases]
    copies = [pair[1] for pair in family.cases]
    texts = distractors + originals + copies
    ids = list(range(len(texts)))
    of_copy = {len(distractors) + len(originals) + i: len(distractors) + i for i in range(len(copies))}
    dedup = policy.dedup
    found = find_duplicates(ids, texts, threshold=dedup.threshold, num_perm=dedup.num_perm, shingle_words=dedup.shingle_words,
                            semantic_threshold=dedup.semantic_threshold if dedup.semantic else None,
                            semantic_margin=dedup.semantic_margin)
    hits = {d.record for d in found if of_copy.get(d.record) == d.of}
    return len(hits), len(copies)


def false_duplicate_rate(policy: Policy, records: list[str]) -> float:
    dedup = policy.dedup
    found = find_duplicates(list(range(len(records))), records, threshold=dedup.threshold, num_perm=dedup.num_perm,
                            shingle_words=dedup.shingle_words,
                            semantic_threshold=dedup.semantic_threshold if dedup.semantic else None,
                            semantic_margin=dedup.semantic_margin)
    return len(found) / len(records)


def family_score(chain: Chain, family: Family, distractors: list[str], misses: list[str]) -> tuple[int, int]:
    if family.kind == "duplicates":
        return duplicate_recall(chain.policy, family, distractors)
    hits = 0
    for case in family.cases:
        if caught(chain, case, family.expect):
            hits += 1
        else:
            misses.append(f"  miss [{family.name}] {case[:100]!r}")
    return hits, len(family.cases)


def report_swaps(families: list[Family], chain: Chain, show_misses: bool, only: str | None) -> None:
    distractors = template_records(60, seed=1)
    for tuned, measured in (("A", "B"), ("B", "A")):
        if only and measured != only:
            continue
        print(f"\n== swap: tuned on {tuned}, measured on held-out {measured} (policy {chain.policy.name}) ==")
        misses: list[str] = []
        for kind in KINDS[:-1]:
            total_hits = total = 0
            for family in (f for f in families if f.kind == kind and f.half == measured):
                hits, count = family_score(chain, family, distractors, misses)
                total_hits, total = total_hits + hits, total + count
                print(f"  {kind:<10} {family.name:<32} {hits:>2}/{count:<2} {hits / count:6.0%}")
            print(f"  {kind:<10} {'ALL (held-out ' + measured + ')':<32} {total_hits:>2}/{total:<2} {total_hits / max(total, 1):6.0%}")
        if show_misses:
            print("\n".join(misses))


def report_clean(families: list[Family], show_misses: bool) -> None:
    clean = [f for f in families if f.kind == "clean"]
    for name in shipped_policies():
        chain = Chain(load_policy(name))
        for detectors_only in (True, False):
            which = "detector" if detectors_only else "any"
            print(f"\n== clean families, policy {name}, {which} findings ==")
            rows = []
            for half in "AB":
                bad = total = 0
                for family in (f for f in clean if f.half == half):
                    hits = [(case, flagged(chain, case, detectors_only)) for case in family.cases]
                    hits = [(case, codes) for case, codes in hits if codes]
                    bad, total = bad + len(hits), total + len(family.cases)
                    if hits and (show_misses or detectors_only):
                        rows += [f"  FP [{family.name}] {codes} {case[:80]!r}" for case, codes in hits]
                print(f"  half {half}: {bad}/{total} clean records flagged ({bad / max(total, 1):.1%})")
            if rows and (show_misses or name == "general"):
                print("\n".join(rows))
        records = template_records(300)
        print(f"  false duplicates among 300 distinct records of one template: {false_duplicate_rate(chain.policy, records):.1%}")


def clean_stories(count: int, path: Path = STORIES) -> list[str]:
    """The first `count` complete stories of the shared TinyStories sample (none of which should be
    flagged); empty when the sample is not there."""
    if not path.is_file():
        return []
    stories = [s.strip() for s in path.read_text(encoding="utf-8").split("<|endoftext|>")[:-1]]  # the last is cut off
    return [s for s in stories if s][:count]


def report_clean_corpus(count: int, show_misses: bool) -> None:
    stories = clean_stories(count)
    if not stories:
        print(f"\n(clean corpus skipped: {STORIES} is not there)")
        return
    for name in shipped_policies():
        chain = Chain(load_policy(name))
        for detectors_only in (True, False):
            hits = [(story, codes) for story in stories if (codes := flagged(chain, story, detectors_only))]
            which = "detector" if detectors_only else "any"
            print(f"\n== clean corpus ({len(stories)} TinyStories), policy {name}, {which} findings: "
                  f"{len(hits)}/{len(stories)} flagged ({len(hits) / len(stories):.1%}) ==")
            if show_misses or (name == "general" and detectors_only):
                print("\n".join(f"  FP {codes} {story[:80]!r}" for story, codes in hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="general")
    parser.add_argument("--half", choices=["A", "B"], help="only report this half as the held-out one")
    parser.add_argument("--misses", action="store_true", help="print each missed case and each false positive")
    parser.add_argument("--folder", type=Path, default=FAMILIES, help="the family files (default: %(default)s)")
    parser.add_argument("--stories", type=int, default=500, help="clean TinyStories records to check (0: none)")
    parser.add_argument("--smoke", action="store_true", help="accepted for the suite's smoke run; the full run takes seconds")
    args = parser.parse_args()
    families = load_families(args.folder)
    counts = {kind: sum(1 for f in families if f.kind == kind) for kind in KINDS}
    print("families:", ", ".join(f"{k} {v}" for k, v in counts.items()),
          f"({sum(len(f.cases) for f in families)} cases)")
    report_swaps(families, Chain(load_policy(args.policy)), args.misses, args.half)
    report_clean(families, args.misses)
    if args.stories:
        report_clean_corpus(args.stories, args.misses)


if __name__ == "__main__":
    main()
