"""Synthetic data: grow the training set with the service LLM where the standby model is weak.

``standby synth`` (:mod:`standby.synth.run`): seeds sampled without replacement (or the worst
rows of an evaluation), one- or two-stage generation with structured output, every item
validated, exact and near-duplicates removed (MinHash/LSH, :mod:`standby.synth.dedup`), items
near a held-out prompt removed (:mod:`standby.synth.decontaminate`), provenance on every row.
"""
