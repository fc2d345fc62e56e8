"""MinHash + LSH: find the items whose Jaccard similarity with a query may reach a threshold
without comparing the query with every item. Candidates from the LSH buckets are then checked
with the exact Jaccard of their sets, so the index never reports a pair below the threshold;
bands are chosen so that a pair at the threshold becomes a candidate with probability >= 0.999
(pairs above it more often still).

Signatures use 32-bit shingle hashes and universal hashing ``(a * h + b) mod (2**61 - 1)`` with
fixed coefficients, so they are the same on every run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable

import numpy as np

from standby.synth.textsim import hash64, jaccard

NUM_PERM = 128
_PRIME = np.uint64((1 << 61) - 1)
_RNG = np.random.default_rng(20_240_607)
_A = _RNG.integers(1, 1 << 32, size=NUM_PERM, dtype=np.uint64)
_B = _RNG.integers(0, 1 << 32, size=NUM_PERM, dtype=np.uint64)
RECALL_AT_THRESHOLD = 0.999


def signature(shingles: Iterable[str]) -> np.ndarray:
    """The MinHash signature (NUM_PERM uint64) of a set of shingles."""
    hashes = np.fromiter((hash64(s) & 0xFFFFFFFF for s in shingles), dtype=np.uint64)
    if hashes.size == 0:
        return np.full(NUM_PERM, _PRIME, dtype=np.uint64)
    permuted = (np.outer(hashes, _A) + _B) % _PRIME
    return np.asarray(permuted.min(axis=0))


def bands_for(threshold: float) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band (fewest false candidates) that still
    make a pair at ``threshold`` a candidate with probability RECALL_AT_THRESHOLD."""
    best = (NUM_PERM, 1)
    for rows in range(1, NUM_PERM + 1):
        bands = NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= RECALL_AT_THRESHOLD:
            best = (bands, rows)
    return best


class LSHIndex:
    """Sets under keys; ``query`` returns the keys whose set has Jaccard >= threshold with the
    query's set, most similar first (exact check of LSH candidates)."""

    def __init__(self, threshold: float) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.bands, self.rows = bands_for(threshold)
        self._buckets: list[dict[bytes, list[Hashable]]] = [
            defaultdict(list) for _ in range(self.bands)
        ]
        self._sets: dict[Hashable, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        r = self.rows
        return [sig[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]

    def add(self, key: Hashable, shingles: frozenset[str]) -> None:
        if key in self._sets or not shingles:
            return
        self._sets[key] = shingles
        for bucket, band in zip(self._buckets, self._keys(signature(shingles)), strict=True):
            bucket[band].append(key)

    def query(self, shingles: frozenset[str]) -> list[tuple[Hashable, float]]:
        if not shingles:
            return []
        seen: set[Hashable] = set()
        hits: list[tuple[Hashable, float]] = []
        for bucket, band in zip(self._buckets, self._keys(signature(shingles)), strict=True):
            for key in bucket.get(band, ()):
                if key in seen:
                    continue
                seen.add(key)
                score = jaccard(shingles, self._sets[key])
                if score >= self.threshold:
                    hits.append((key, score))
        hits.sort(key=lambda kv: -kv[1])
        return hits
