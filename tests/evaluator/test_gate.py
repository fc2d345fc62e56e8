"""The gate: thresholds and a paired bootstrap against the serving model's scores on the same
rows; a worse candidate is rejected, a better one accepted, the numbers in the report; the
scores go into the candidate's standby-model.json; ``standby gate`` and ``standby evaluate``
from the command line."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from standby.cli import main
from standby.evaluator.config import EvaluateConfig, GateConfig, GateSettings
from standby.evaluator.evaluate import run_evaluation
from standby.evaluator.gate import decide, paired_bootstrap, run_gate
from standby.gateway.app import model_scores
from tests.evaluator.test_evaluate import config, judged, write_answers
from tests.fixtures.sim import RunningSim

ROWS = 24


def scripted_eval(
    sim: RunningSim, tmp_path: Path, name: str, mean: float, **kw: Any
) -> EvaluateConfig:
    """Answers named ``{name}-{i}`` judged around ``mean`` (+-4, seeded), evaluated into
    ``tmp_path/name``; returns the config used."""
    rng = random.Random(name)
    answers = write_answers(
        tmp_path / f"{name}-answers", [f"{name}-{i}" for i in range(ROWS)], name
    )
    for i in range(ROWS):
        s = round(mean + rng.uniform(-4, 4), 1)
        p = round(mean + rng.uniform(-4, 4), 1)
        sim.sim.script([judged(s, p, f"{name} row {i}")], match=f"{name}-{i}\n")
    cfg = config(sim, tmp_path, answers, output_dir=tmp_path / name, cache_path=None, **kw)
    run_evaluation(cfg)
    assert sim.sim.stats()["script_pending"] == 0
    return cfg


@pytest.fixture
def serving(sim: RunningSim, tmp_path: Path) -> Path:
    """The serving model's evaluation on the same rows: scores around 80."""
    scripted_eval(sim, tmp_path, "serving", 80, gate=False)
    return tmp_path / "serving"


def card(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "standby-model.json").read_text()))


def test_a_better_candidate_is_accepted_with_the_ci_in_the_report(
    sim: RunningSim, tmp_path: Path, serving: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "standby-model.json").write_text(
        json.dumps({"version": "v2", "base_model": {"id": "tiny"}, "scores": {"other": 1.0}})
    )
    scripted_eval(
        sim,
        tmp_path,
        "better",
        86,
        baseline_eval_ds_id=str(serving),
        candidate_adapter_dir=adapter,
        avg_similarity_threshold=82,
        avg_precision_threshold=82,
    )
    report = json.loads((tmp_path / "better" / "report.json").read_text())
    gate = report["gate"]
    assert gate["passed"], gate["summary"]
    comp = gate["comparison"]
    assert comp["paired_rows"] == ROWS and comp["bootstrap_samples"] == 2000
    for c in ("similarity", "precision"):
        d = comp[c]
        assert d["ci_low"] <= d["diff_mean"] <= d["ci_high"]
        assert 3 < d["diff_mean"] < 9 and d["ci_low"] > 0  # clearly better
        assert d["serving_mean"] == pytest.approx(80, abs=2.5)
    md = (tmp_path / "better" / "report.md").read_text()
    assert "**PASS**" in md and f"Paired comparison with the serving model on {ROWS} rows" in md
    written = card(adapter)
    # The trainer's keys stay; the scores join them (what the gateway exports).
    assert written["version"] == "v2" and written["base_model"] == {"id": "tiny"}
    assert written["scores"]["other"] == 1.0
    assert written["scores"]["similarity"] == gate["thresholds"]["similarity"]["mean"]
    assert written["evaluation"]["gate"]["passed"] is True
    # What the gateway exports as standby_fallback_model_score once this adapter serves.
    assert model_scores(str(adapter)) == {
        "similarity": written["scores"]["similarity"],
        "precision": written["scores"]["precision"],
    }


def test_a_worse_candidate_is_rejected_and_the_card_left_alone(
    sim: RunningSim, tmp_path: Path, serving: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "standby-model.json").write_text(json.dumps({"version": "v3"}))
    # Above the absolute thresholds, but 6 points below the serving model.
    scripted_eval(
        sim, tmp_path, "worse", 74, baseline_eval_ds_id=str(serving), candidate_adapter_dir=adapter
    )
    gate = json.loads((tmp_path / "worse" / "report.json").read_text())["gate"]
    assert not gate["passed"]
    assert all(gate["thresholds"][c]["passed"] for c in ("similarity", "precision"))
    for c in ("similarity", "precision"):
        d = gate["comparison"][c]
        assert d["ci_high"] < 0 and not d["passed"]
        assert any(r.startswith(f"{c}: candidate - serving") for r in gate["reasons"])
    assert card(adapter) == {"version": "v3"}
    assert "**FAIL**" in (tmp_path / "worse" / "report.md").read_text()
    # `standby gate` decides again from the saved evaluation: a 20-point margin lets it pass.
    decision = run_gate(
        GateConfig(
            output_dir=tmp_path / "worse",
            baseline_eval_ds_id=str(serving),
            non_inferiority_margin=20,
            avg_similarity_threshold=50,
            avg_precision_threshold=50,
        )
    )
    assert decision["passed"] and decision["comparison"]["margin"] == 20
    saved = json.loads((tmp_path / "worse" / "report.json").read_text())["gate"]
    assert (
        saved["passed"]
        and saved["comparison"]["similarity"] == decision["comparison"]["similarity"]
    )


def test_thresholds_alone_reject_low_scores() -> None:
    rows = [
        {
            "sample_id": f"s{i}",
            "instructions": "i",
            "similarity_scores": [60.0],
            "precision_scores": [95.0],
        }
        for i in range(5)
    ]
    decision = decide(rows, None, GateSettings())
    assert not decision["passed"]
    assert decision["reasons"] == ["mean similarity 60.0 < threshold 90"]
    assert decision["comparison"] is None
    assert not decide([], None, GateSettings())["passed"]


def test_paired_bootstrap_is_seeded_and_covers_the_mean() -> None:
    diffs = np.random.default_rng(1).normal(2.0, 3.0, size=200)
    a = paired_bootstrap(diffs, 2000, 0.95)
    assert a == paired_bootstrap(diffs, 2000, 0.95)
    mean, lo, hi = a
    assert lo < mean < hi and lo < 2.0 < hi
    # The interval is about mean +- 1.96 * sd / sqrt(n).
    assert hi - lo == pytest.approx(2 * 1.96 * diffs.std() / np.sqrt(200), rel=0.15)


def test_cli_evaluate_and_gate_exit_codes(
    sim: RunningSim, tmp_path: Path, serving: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The reference answers themselves: the simulated judge (chrF) scores them 100.
    answers = write_answers(
        tmp_path / "cli-answers", [f"Item {i} is a small blue box with a lid." for i in (0, 1)]
    )
    flags = [
        "--service-llm-base-url",
        sim.url,
        "--service-llm-api-key",
        "k",
        "--rate-limit-per-minute",
        "60000",
        "--lm-response-ds-id",
        str(answers),
        "--eval-repeat",
        "1",
        "--output-dir",
        str(tmp_path / "cli"),
        "--cache-path",
        str(tmp_path / "c.db"),
    ]
    assert main(["evaluate", *flags]) == 0  # thresholds pass
    out = capsys.readouterr().out
    assert "2 rows: similarity 100.0, precision 100.0" in out and "gate: PASS" in out
    gate = ["gate", "--baseline-eval-ds-id", str(serving)]
    assert main([*gate, "--output-dir", str(tmp_path / "cli")]) == 0
    assert "similarity vs serving +" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # the serving model itself is below 90
        main(["gate", "--output-dir", str(serving), "--json"])
    assert exc.value.code == 3
    decision = json.loads(capsys.readouterr().out)
    assert decision["reasons"][0].startswith("mean similarity 8")
    assert (
        main(
            ["evaluate", *flags, "--service-llm-api-key", "x", "--service-model-name", "error-403"]
        )
        == 2
    )
    assert "permission" in capsys.readouterr().err.lower()
