"""Stage 8: exact, near-duplicate and reworded records, and over-represented openings.

Exact duplicates compare whitespace- and case-normalised text. Near duplicates use MinHash over word
5-gram shingles and datasketch's `MinHashLSH` to find candidates, with the index tuned below the
threshold so that few true pairs are missed (at the threshold itself LSH finds only ~75% of pairs);
a candidate counts when the exact Jaccard similarity of the two shingle sets reaches the threshold. The earliest record is kept and each later one is
reported with the record it matches. Signatures are computed with numpy for a batch of records at a
time (hashing shingles one by one in Python is ~30x slower), with permutations taken from datasketch
so the signatures are ordinary `MinHash` objects.

Openings ("Once upon a time" in TinyStories) are counted over the first few words of each record and
reported when one opening is used by more than a set share of the corpus.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")
_BATCH = 128  # records per numpy batch: (num_perm x shingles) uint32 stays ~13 MB, near the cache
_WORD_CHARS = 16  # characters of a word that its hash sees
_CHAR_WEIGHTS = np.array([pow(1_000_003, k, 2**64) for k in range(_WORD_CHARS)], dtype=np.uint64)
_PUNCTUATION = str.maketrans({c: " " for c in "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\u2018\u2019\u201c\u201d\u2014\u2013\u2026"})


@dataclass(frozen=True)
class Duplicate:
    record: int
    of: int  # the kept record it repeats
    kind: str  # "exact", "near" (MinHash over word shingles) or "semantic" (TF-IDF cosine: reworded)
    similarity: float


def exact_key(text: str) -> str:
    """The same text up to case and whitespace."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8", "replace"), digest_size=16).hexdigest()


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: spreads the bits of a 32-bit hash (uint32 in, uint32 out)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class Signer:
    """MinHash signatures for texts: words -> 64-bit word hashes -> shingle hashes -> `num_perm` minima.

    Everything after splitting is numpy over a whole batch of records: words become fixed-width
    unicode arrays whose code points are hashed column by column (deterministic across processes,
    unlike `hash()`), shingles are rolling hashes over the batch's concatenated words, and the
    shingles that would straddle two records are dropped.
    """

    def __init__(self, num_perm: int = 128, shingle_words: int = 5, seed: int = 1):
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self.permutations = MinHash(num_perm=num_perm, seed=seed).permutations  # (2, num_perm) uint32
        rng = np.random.default_rng(seed)
        self._mix = rng.integers(1, 2**32, size=shingle_words, dtype=np.uint64) | np.uint64(1)

    def _words(self, texts: list[str]) -> tuple[list[list[str]], np.ndarray]:
        n = self.shingle_words
        words = [t.lower().translate(_PUNCTUATION).split() for t in texts]
        words = [w if len(w) >= n else w + [""] * (n - len(w)) for w in words]  # a short text is one shingle
        return words, np.fromiter(map(len, words), dtype=np.int64, count=len(words))

    def _shingle_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """uint32 shingle hashes of all `texts`, and where each text's shingles start."""
        words, lengths = self._words(texts)
        flat = np.array([w for ws in words for w in ws], dtype=f"U{_WORD_CHARS}")  # longer words are cut
        codes = flat.view(np.uint32).reshape(len(flat), _WORD_CHARS).astype(np.uint64)
        word_hash = codes @ _CHAR_WEIGHTS  # polynomial hash of the code points; uint64 arithmetic wraps
        n = self.shingle_words
        count = len(flat) - n + 1
        h = np.zeros(count, dtype=np.uint64)
        for k in range(n):
            h = h * np.uint64(0x9E3779B1) + word_hash[k : k + count] * self._mix[k]
        per_text = lengths - n + 1
        starts = np.cumsum(lengths) - lengths
        offsets = np.cumsum(per_text) - per_text
        inside = np.arange(per_text.sum()) - np.repeat(offsets, per_text) + np.repeat(starts, per_text)
        h = h[inside]
        return _fmix32((h ^ (h >> np.uint64(32))).astype(np.uint32)), offsets

    def shingles(self, text: str) -> np.ndarray:
        return self._shingle_batch([text])[0]

    def sign(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        a, b = self.permutations
        for start in range(0, len(texts), _BATCH):
            flat, offsets = self._shingle_batch(texts[start : start + _BATCH])
            permuted = np.multiply(a[:, None], flat[None, :])  # (num_perm, shingles), wraps mod 2^32
            permuted += b[:, None]
            out[start : start + len(offsets)] = np.minimum.reduceat(permuted, offsets, axis=1).T
        return out


def find_duplicates(ids: list[int], texts: list[str], *, threshold: float = 0.8, num_perm: int = 128,
                    shingle_words: int = 5, near: bool = True, semantic_threshold: float | None = None,
                    semantic_margin: float = 1.5) -> list[Duplicate]:
    """Duplicates among `texts` (in `ids` order: earlier records are kept). With `semantic_threshold`,
    records that survive the exact and MinHash passes are also compared by meaning (`semantic_duplicates`)."""
    found: list[Duplicate] = []
    first_by_key: dict[str, int] = {}
    unique: list[int] = []  # positions of texts that are not exact duplicates
    for position, (record, text) in enumerate(zip(ids, texts)):
        key = exact_key(text)
        if key in first_by_key:
            found.append(Duplicate(record, first_by_key[key], "exact", 1.0))
        else:
            first_by_key[key] = record
            unique.append(position)
    if near and unique:
        found += _near_duplicates([ids[p] for p in unique], [texts[p] for p in unique], threshold, num_perm, shingle_words)
    if semantic_threshold is not None:
        taken = {d.record for d in found}
        rest = [p for p in unique if ids[p] not in taken]
        found += semantic_duplicates([ids[p] for p in rest], [texts[p] for p in rest], threshold=semantic_threshold,
                                     margin=semantic_margin)
    return sorted(found, key=lambda d: d.record)


_PAIR_BLOCK = 4_000_000  # similarity entries computed at once (rows x records): ~16 MB of float32
_LEAST_SHARED = 4  # content words a reworded pair has in common (two short texts on one topic share fewer)
_NEIGHBOURS = 4  # nearest records (after the closest) whose mean similarity is a record's typical one


def semantic_duplicates(ids: list[int], texts: list[str], *, threshold: float = 0.4, margin: float = 1.5,
                        certain: float = 0.95) -> list[Duplicate]:
    """Reworded copies: the same content in other words and order, which shares few word 5-grams and so
    passes MinHash. Each text is a TF-IDF vector of its words (English stop words dropped, sublinear
    term frequency, idf from this corpus). A pair is a duplicate of the earlier record when its cosine
    reaches `certain`, or reaches `threshold` and stands out from both records' other neighbours: the
    cosine divided by the mean similarity of each record's `_NEIGHBOURS` nearest records after its
    closest one (a ratio margin, as used to mine parallel sentences) reaches `margin`, and the two share
    at least `_LEAST_SHARED` content words. In a corpus of two or three records there are no other
    neighbours and the cosine alone decides.

    The margin is what tells a rewording from distinct records of one template, which look alike by
    design: 300 stories from one template have nearest-neighbour cosines of 0.6-0.85 but margins under
    1.3, while reworded copies (synonyms swapped, sentences reordered, a clause added) score cosines of
    0.45-1.0 and margins above 2. Every pair is compared (in blocks, as sparse products), which is
    quadratic: fine for a review of up to ~100k records, not for web-scale corpora."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) < 2:
        return []
    try:
        vectors = TfidfVectorizer(sublinear_tf=True, stop_words="english", dtype=np.float32).fit_transform(texts)
    except ValueError:  # only stop words everywhere: nothing to compare by meaning
        return []
    vectors = vectors.tocsr()
    neighbours = min(_NEIGHBOURS + 1, len(texts) - 1)
    rows_per_block = max(1, _PAIR_BLOCK // len(texts))
    typical = np.zeros(len(texts), dtype=np.float32)  # mean similarity of each record's nearest records
    found, kept_of = [], {}
    for start in range(0, len(texts), rows_per_block):
        block = (vectors[start : start + rows_per_block] @ vectors.T).toarray()
        for offset, row in enumerate(block):
            row[start + offset] = 0
        if neighbours > 1:  # the nearest records after the closest one (which may be the copy itself)
            nearest = np.partition(block, -neighbours, axis=1)[:, -neighbours:]
            typical[start : start + len(block)] = (nearest.sum(axis=1) - nearest.max(axis=1)) / (neighbours - 1)
        for offset, row in enumerate(block):
            position = start + offset
            earlier = row[:position]
            if not len(earlier):
                continue
            best = int(earlier.argmax())
            cosine = float(earlier[best])
            ratio = cosine / max(1e-6, (typical[position] + typical[best]) / 2)
            if cosine >= certain or (cosine >= threshold and ratio >= margin and _shared_words(vectors, position, best) >= _LEAST_SHARED):
                original = kept_of.get(best, best)
                kept_of[position] = original
                found.append(Duplicate(ids[position], ids[original], "semantic", round(cosine, 3)))
    return found


def _shared_words(vectors, first: int, second: int) -> int:
    return len(np.intersect1d(vectors[first].indices, vectors[second].indices))


def _near_duplicates(ids: list[int], texts: list[str], threshold: float, num_perm: int, shingle_words: int) -> list[Duplicate]:
    signer = Signer(num_perm, shingle_words)
    signatures = signer.sign(texts)
    lsh = MinHashLSH(threshold=max(0.3, threshold - 0.15), num_perm=num_perm)
    kept_of: dict[int, int] = {}  # a duplicate's position -> the kept position it repeats
    found = []
    for position, signature in enumerate(signatures):
        minhash = MinHash(hashvalues=signature, permutations=signer.permutations, scheme="affine32")
        best, best_similarity = -1, 0.0
        candidates = lsh.query(minhash)
        if candidates:
            mine = np.unique(signer.shingles(texts[position]))
            for candidate in candidates:
                theirs = np.unique(signer.shingles(texts[candidate]))
                similarity = len(np.intersect1d(mine, theirs, assume_unique=True)) / len(np.union1d(mine, theirs))
                if similarity > best_similarity:
                    best, best_similarity = candidate, similarity
        if best >= 0 and best_similarity >= threshold:
            original = kept_of.get(best, best)
            kept_of[position] = original
            found.append(Duplicate(ids[position], ids[original], "near", round(best_similarity, 3)))
        lsh.insert(position, minhash, check_duplication=False)
    return found


def opening(text: str, words: int) -> str:
    return " ".join(_WORD.findall(text[: 40 * words].lower())[:words])


def over_represented_openings(texts: list[str], *, words: int = 4, max_share: float = 0.1, top: int = 10) -> list[dict]:
    """The most common openings with their count and share; `over` marks those above `max_share`."""
    counts = Counter(opening(t, words) for t in texts)
    total = max(len(texts), 1)
    return [
        {"opening": text, "count": count, "share": round(count / total, 4), "over": count / total > max_share}
        for text, count in counts.most_common(top)
        if count > 1
    ]

