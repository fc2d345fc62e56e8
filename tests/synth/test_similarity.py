"""Dedup and decontamination measures on their own: MinHash/LSH finds what exact Jaccard finds
at the threshold, and the thresholds separate near-copies and paraphrases from related but
different prompts."""

from __future__ import annotations

import random

from standby.synth.decontaminate import Decontaminator
from standby.synth.dedup import Deduplicator
from standby.synth.minhash import LSHIndex
from standby.synth.textsim import char_shingles, jaccard


def test_lsh_finds_every_pair_above_the_threshold_and_none_below() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(60)]
    sets = [frozenset(rng.sample(vocab, 20)) for _ in range(150)]
    for s in sets[:40]:  # near variants: swap a few words
        sets.append(frozenset([*list(s)[:17], *rng.sample(vocab, 3)]))
    index = LSHIndex(0.6)
    for i, s in enumerate(sets):
        index.add(i, s)
    for s in sets:
        expected = {j for j, t in enumerate(sets) if jaccard(s, t) >= 0.6}
        assert {k for k, _ in index.query(s)} == expected


def test_near_duplicates_but_not_related_prompts() -> None:
    dedup = Deduplicator(threshold=0.7, ngram=5)
    dedup.remember(["Write a haiku about autumn leaves."])
    assert dedup.offer("Write a haiku about autumn leaves.") == "exact"
    assert dedup.offer("  WRITE a haiku about autumn   leaves.") == "exact"
    assert dedup.offer("Write a haiku about the autumn leaves!") == "near"
    assert dedup.offer("Write a haiku about spring rain.") is None
    assert dedup.offer("Write a haiku about spring rain?") == "near"  # the one just accepted
    assert jaccard(char_shingles("abc", 5), char_shingles("abc", 5)) == 1.0


def test_decontamination_kinds() -> None:
    test = [
        "Write a haiku about autumn leaves falling in the park.",
        "How do vaccines train the immune system to fight viruses?",
    ]
    d = Decontaminator(test, threshold=0.6, ngram=6)
    exact = d.match("write a HAIKU about autumn leaves falling in the park")
    assert exact is not None and exact.how == "exact"
    para = d.match("Compose a haiku on autumn leaves that fall in a park.")
    assert para is not None and para.how == "paraphrase" and para.test_prompt == test[0]
    overlap = d.match(
        "For tomorrow's class on biology and history of medicine, with examples from several "
        "centuries: how do vaccines train the immune system, in plain words?"
    )
    assert overlap is not None and overlap.how == "overlap" and overlap.test_prompt == test[1]
    assert d.match("Write a haiku about a quiet winter morning by the sea.") is None
