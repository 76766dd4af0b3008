"""Safety review throughput: the cheap chain on 200-word records (target >= 2,000 records/s on one core;
folding, obfuscated PII, street addresses and the offensive-language model included), MinHash dedup of
100,000 records (target < 60 s), and the meaning-level (TF-IDF) dedup, which compares every pair. CPU
seconds are reported next to wall seconds because shared machines make wall time noisy.

    .venv/bin/python benchmarks/safety.py [--records 4000] [--dedup-records 100000] [--semantic-records 10000]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from distill.paths import data_path
from distill.review.chain import Chain
from distill.review.dedup import find_duplicates, semantic_duplicates
from distill.review.policy import load_policy

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"


def two_hundred_word_records(count: int) -> list[str]:
    """200-word records: TinyStories text re-cut to 200 words when the shared sample is there, else
    sentences of simple words."""
    if SAMPLE.is_file():
        words = SAMPLE.read_text(encoding="utf-8").replace("<|endoftext|>", " ").split()
    else:
        vocabulary = (data_path("safety") / "vocabulary" / "children_simple.txt").read_text().split()
        rng = random.Random(0)
        words = [rng.choice(vocabulary) + ("." if i % 12 == 11 else "") for i in range(200_000)]
    chunks = [" ".join(words[i : i + 200]) + "." for i in range(0, len(words) - 200, 200)]
    return [chunks[i % len(chunks)] for i in range(count)]


def bench_chain(count: int) -> None:
    records = two_hundred_word_records(count)
    for policy in ("children", "general"):
        chain = Chain(load_policy(policy))
        for text in records[:200]:
            chain.check(text)  # warm the vocabulary memo, as a long review would be
        wall, cpu = time.perf_counter(), time.process_time()
        for text in records:
            chain.check(text)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rate = count / cpu
        print(f"cheap chain ({policy}): {count} records of 200 words in {cpu:.2f} s CPU ({wall:.2f} s wall): "
              f"{rate:,.0f} records/s on one core [target >= 2,000: {'met' if rate >= 2000 else 'MISSED'}]")


def synthetic_corpus(count: int, words_per_record: int = 200, near_share: float = 0.01) -> tuple[list[str], int]:
    """Random 200-word records over a 5,000-word vocabulary, plus near copies (two words changed) of 1%."""
    rng = np.random.default_rng(0)
    vocabulary = np.array([f"w{i}" for i in range(5000)])
    ids = rng.integers(0, len(vocabulary), size=(count, words_per_record))
    planted = int(count * near_share)
    sources = rng.choice(count - planted, size=planted, replace=False)
    ids[count - planted :] = ids[sources]
    ids[count - planted :, [50, 150]] = rng.integers(0, len(vocabulary), size=(planted, 2))
    return [" ".join(row) for row in vocabulary[ids]], planted


def bench_dedup(count: int) -> None:
    texts, planted = synthetic_corpus(count)
    wall, cpu = time.perf_counter(), time.process_time()
    found = find_duplicates(list(range(count)), texts, threshold=0.8)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"MinHash dedup: {count:,} records of 200 words in {wall:.1f} s wall ({cpu:.1f} s CPU); "
          f"found {len(found)} of {planted} planted near duplicates [target < 60 s: {'met' if wall < 60 else 'MISSED'}]")


def bench_semantic(count: int) -> None:
    texts = two_hundred_word_records(count)
    texts = [f"{i} {t}" for i, t in enumerate(texts)]  # the sample repeats when count exceeds it
    wall, cpu = time.perf_counter(), time.process_time()
    semantic_duplicates(list(range(count)), texts, threshold=0.7)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"semantic (TF-IDF) dedup: {count:,} records of 200 words in {wall:.1f} s wall ({cpu:.1f} s CPU); every pair compared")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--dedup-records", type=int, default=100_000)
    parser.add_argument("--semantic-records", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes: checks that the benchmark runs (its figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:  # flags given still win over these
        args = parser.parse_args(namespace=argparse.Namespace(records=50, dedup_records=300, semantic_records=100))
    bench_chain(args.records)
    bench_dedup(args.dedup_records)
    bench_semantic(args.semantic_records)


if __name__ == "__main__":
    main()
