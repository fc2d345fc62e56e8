"""Text similarity for dedup and decontamination: normalised text, character n-gram shingles
(near-duplicates: small edits, punctuation, inflection) and content-word sets (paraphrases:
the same content words in another order or with other filler words).

Everything here is deterministic across processes (no salted ``hash()``): shingles are hashed
with BLAKE2b, so a MinHash signature of a text is the same on every run and machine.
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Function words and generic request words: they carry no topic, so two prompts sharing only
# these are not paraphrases of each other.
STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most
    my no nor not now of off on once only or other our ours out over own please same she should
    so some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours yourself give tell me write make create explain describe list provide""".split()  # noqa: SIM905
)
_SUFFIXES = ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "ly", "s")


def normalise(text: str) -> str:
    """Lower-case words joined by single spaces (punctuation dropped)."""
    return " ".join(_WORD.findall(text.lower()))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """A light suffix stripper (falling/falls/fall -> fall): enough to see a paraphrase that
    changed a word's form; not a linguistic stemmer."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2]:  # runn(ing) -> run, fall stays
        word = word[:-1] if word[-1] not in "ls" else word
    return word


def content_words(text: str) -> frozenset[str]:
    """The stemmed words of ``text`` that are not stop words (digits kept)."""
    return frozenset(stem(w) for w in words(text) if w not in STOPWORDS)


def char_shingles(text: str, n: int) -> frozenset[str]:
    """Character n-grams of the normalised text (the whole text when it is shorter)."""
    norm = normalise(text)
    if len(norm) <= n:
        return frozenset([norm]) if norm else frozenset()
    return frozenset(norm[i : i + n] for i in range(len(norm) - n + 1))


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    ws = words(text)
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def hash64(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
