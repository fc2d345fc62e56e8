"""Exact and near-duplicate removal of new instructions, within the new items and against the
reference data (and, when appending, the rows already in the output).

Exact: the pair store's prompt id (normalised text). Near: Jaccard similarity of character
n-gram shingles at or above ``threshold``, found with MinHash/LSH and checked exactly. The first
item seen wins, so the outcome depends only on the order items are offered in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from standby.data.pairs import prompt_id_of
from standby.synth.minhash import LSHIndex
from standby.synth.textsim import char_shingles

Verdict = Literal["exact", "near"]


class Deduplicator:
    """Remembers every text it accepted; says whether a new one repeats any of them."""

    def __init__(self, threshold: float = 0.7, ngram: int = 5) -> None:
        self.ngram = ngram
        self._exact: set[str] = set()
        self._near = LSHIndex(threshold)

    def __len__(self) -> int:
        return len(self._exact)

    def remember(self, texts: Iterable[str]) -> None:
        """Texts new ones must not repeat (the reference data)."""
        for text in texts:
            self._add(prompt_id_of(text), text)

    def _add(self, key: str, text: str) -> None:
        self._exact.add(key)
        self._near.add(key, char_shingles(text, self.ngram))

    def offer(self, text: str) -> Verdict | None:
        """None (and the text is remembered) when it is new, else how it repeats."""
        key = prompt_id_of(text)
        if key in self._exact:
            return "exact"
        if self._near.query(char_shingles(text, self.ngram)):
            return "near"
        self._add(key, text)
        return None
