"""The optional judge filter: the evaluator's judge scores each surviving pair; low scores and
pairs it could not score are dropped and counted."""

from __future__ import annotations

import json
from pathlib import Path

from standby.synth.run import run_synth
from tests.fixtures.sim import RunningSim
from tests.synth.conftest import TRAIN, items, new_item, read_rows, script_each_seed, settings


def verdict(similarity: float, precision: float) -> str:
    return json.dumps(
        {
            "similarity_assessment": {"score": similarity, "reason": "fits the examples"},
            "precision_assessment": {"score": precision, "reason": "how well it answers"},
        }
    )


def test_low_scores_and_unscored_pairs_are_judged_out(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    script_each_seed(sim, {s: items(new_item(i)) for i, s in enumerate(TRAIN)})
    # Judge requests carry the new request's text; the generation requests never do.
    sim.sim.script([verdict(90, 35)], match=new_item(0)[0])
    sim.sim.script([verdict(95, 70)], match=new_item(1)[0])  # at the threshold: kept
    sim.sim.script(["no verdict", "still none"], match=new_item(2)[0])
    for i in range(3, len(TRAIN)):  # the rest score well (unscripted, the simulated judge
        sim.sim.script([verdict(100, 100)], match=new_item(i)[0])  # would use chrF)
    cfg = settings(sim, reference, tmp_path / "out", judge_filter=True, judge_threshold=70)
    summary = run_synth(cfg)

    kept = {r["prompt"] for r in read_rows(tmp_path / "out" / "train_sft.jsonl")}
    assert new_item(0)[0] not in kept and new_item(2)[0] not in kept and new_item(1)[0] in kept
    d = summary.as_dict()
    assert (d["judged_out"], d["judge_failed"], d["kept"]) == (1, 1, 6)
    assert d["judge"] == "precision >= 70"
    assert d["judge_scores"] == {"30-39": 1, "70-79": 1, "90-100": 5}
    assert d["calls"] == 8 + 8 + 1  # generation, one judgement each, one re-ask
    assert sim.sim.stats()["script_pending"] == 0
