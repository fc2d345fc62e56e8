"""Decontamination: no synthetic instruction may be near a prompt of a held-out/test split,
or a model trained on it would be graded on questions it has seen.

An instruction is contaminated when, against some test prompt,
- it is the same prompt after normalisation (case, spacing, punctuation);
- their content-word sets (stop words dropped, light stemming) have Jaccard >= ``threshold``:
  a paraphrase that keeps the content words (reordered, other filler, other word forms);
- they share a run of ``ngram`` consecutive words: a test prompt quoted inside a longer one.

A paraphrase in entirely different words is not caught by surface measures; an embedding or
LLM check would be needed for that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from standby.synth.minhash import LSHIndex
from standby.synth.textsim import content_words, normalise, word_ngrams


@dataclass(frozen=True)
class Contamination:
    test_prompt: str
    how: str  # "exact", "paraphrase" or "overlap"
    score: float


class Decontaminator:
    """The test prompts, indexed; ``match`` names the one a text is too near to, if any."""

    def __init__(self, test_prompts: Iterable[str], threshold: float = 0.6, ngram: int = 10):
        self.ngram = ngram
        self.prompts: list[str] = []
        self._exact: dict[str, int] = {}
        self._words = LSHIndex(threshold)
        self._ngrams: dict[tuple[str, ...], int] = {}
        for prompt in test_prompts:
            i = len(self.prompts)
            self.prompts.append(prompt)
            self._exact.setdefault(normalise(prompt), i)
            self._words.add(i, content_words(prompt))
            for gram in word_ngrams(prompt, ngram):
                self._ngrams.setdefault(gram, i)

    def __len__(self) -> int:
        return len(self.prompts)

    def match(self, text: str) -> Contamination | None:
        exact = self._exact.get(normalise(text))
        if exact is not None:
            return Contamination(self.prompts[exact], "exact", 1.0)
        hits = self._words.query(content_words(text))
        if hits:
            key, score = hits[0]
            assert isinstance(key, int)
            return Contamination(self.prompts[key], "paraphrase", score)
        for gram in word_ngrams(text, self.ngram):
            if (i := self._ngrams.get(gram)) is not None:
                return Contamination(self.prompts[i], "overlap", 1.0)
        return None
