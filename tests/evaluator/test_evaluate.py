"""``standby evaluate`` with the simulated Gemini as judge: well-formed, fenced, malformed then
good, permanently malformed, out-of-range, 5xx and 429 answers; the cache; the report; the
template file; the event; the Hub push; the seed-parity flags."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from standby.errors import ConfigError, StandbyError
from standby.evaluator.batch_inference import COLUMNS
from standby.evaluator.config import EvaluateConfig
from standby.evaluator.evaluate import TextMetrics, run_evaluation
from standby.evaluator.judge import render
from standby.store import PipelineEvent, open_bus
from standby.toolconfig import add_config_flags, resolve_config
from tests.fixtures.hub_stub import HubStub, running_hub_stub
from tests.fixtures.sim import RunningSim

REPO = Path(__file__).resolve().parents[2]


def write_answers(folder: Path, candidates: list[str], model_id: str = "cand") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "instructions": f"Describe item {i}.",
            "target_responses": f"Item {i} is a small blue box with a lid.",
            "candidate_responses": text,
            "model_id": model_id,
            "model_sha": None,
            "sample_id": f"s{i:03d}",
            "repeat_index": 0,
            "latency_s": 0.1,
            "finish_reason": "stop",
        }
        for i, text in enumerate(candidates)
    ]
    assert all(tuple(r) == COLUMNS for r in rows)
    (folder / "batch_infer.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return folder


def judged(sim_score: float, prec_score: float, why: str = "because") -> str:
    return json.dumps(
        {
            "similarity_assessment": {"score": sim_score, "reason": f"sim {why}"},
            "precision_assessment": {"score": prec_score, "reason": f"prec {why}"},
        }
    )


def config(sim: RunningSim, tmp_path: Path, answers: Path, **kw: Any) -> EvaluateConfig:
    base: dict[str, Any] = {
        "service_llm_base_url": sim.url,
        "service_llm_api_key": "k",
        "rate_limit_per_minute": 60_000,
        "service_llm_backoff_s": 0.01,
        "service_llm_max_backoff_s": 0.05,
        "service_llm_max_retries": 3,
        "service_llm_reasks": 2,
        "lm_response_ds_id": str(answers),
        "eval_repeat": 1,
        "eval_workers": 4,
        "cache_path": tmp_path / "cache.db",
        "output_dir": tmp_path / "eval",
        "avg_similarity_threshold": 50,
        "avg_precision_threshold": 50,
    }
    return EvaluateConfig(**{**base, **kw})


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_well_formed_judgements_rows_and_report(sim: RunningSim, tmp_path: Path) -> None:
    answers = write_answers(tmp_path / "a", ["Item 0 is a small blue box with a lid.", "A red."])
    result = run_evaluation(config(sim, tmp_path, answers, eval_repeat=3))
    report = result.data
    rows = rows_of(tmp_path / "eval" / "eval.jsonl")
    cost = report["cost"]
    # Every request the judge sent is counted: 2 rows x 3 repeats, plus any retry a loaded
    # machine causes (a timeout, a dropped keep-alive connection); the judge asked nothing twice.
    assert len(rows) == 2 and sim.sim.stats()["requests"] == cost["calls"] == 6 + cost["retries"]
    assert cost["reasks"] == 0 and cost["malformed"] == 0
    row = rows[0]
    # The simulated judge scores with chrF: the reference itself scores 100, the other answer
    # low; its reasons say it is the simulator, and so do the report and the summary.
    assert row["similarity_scores"] == [100.0] * 3 and row["precision"] == 100.0
    assert rows[1]["similarity"] < 30 and rows[1]["precision"] < 60
    assert all(r.startswith("simulated judge") for r in row["similarity_reasons"])
    assert report["judge"]["simulated"] is True
    assert result.summary()["judge"].startswith("simulated judge (gemini/gemini-3.8-flash")
    assert "(judge: simulated judge" in result.one_line()
    assert row["evaluators"] == ["gemini/gemini-3.8-flash"] * 3 and len(row["dates"]) == 3
    assert row["judge_failures"] == 0 and row["judge_errors"] == []
    # The judge-free metrics: the closer answer scores higher on both.
    assert rows[0]["rouge_l"] > rows[1]["rouge_l"] and rows[0]["chrf"] > rows[1]["chrf"]
    assert set(COLUMNS) <= set(row)
    assert report["scores"]["similarity"]["mean"] == (100 + rows[1]["similarity"]) / 2
    assert report["scores"]["similarity"]["histogram"]["91-100"] == 1
    assert cost["prompt_tokens"] > 0
    assert report["gate"]["passed"] and "thresholds only" in report["gate"]["summary"]
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "## Worst 2 rows" in md and "- **simulated judge**: the scores below" in md


def test_every_kind_of_bad_judge_answer(sim: RunningSim, tmp_path: Path) -> None:
    names = ["fenced", "reask", "range", "broken", "errors", "limited"]
    answers = write_answers(tmp_path / "a", [f"answer-{n}" for n in names])
    s = sim.sim
    s.script([f"```json\n{judged(80, 70)}\n```"], match="answer-fenced")
    s.script(["I think it is good.", judged(60, 50, "second try")], match="answer-reask")
    s.script([judged(150, 40), judged(40, 0), judged(40, 30)], match="answer-range")
    s.script(["{not json"] * 3, match="answer-broken")
    s.script(
        [{"fault": "error-500"}, {"fault": "error-503"}, judged(20, 10)], match="answer-errors"
    )
    s.script([{"fault": "error-429-retry-1"}, judged(90, 90)], match="answer-limited")
    began = time.monotonic()
    report = run_evaluation(config(sim, tmp_path, answers)).data
    took = time.monotonic() - began
    rows = {
        r["candidate_responses"].removeprefix("answer-"): r
        for r in rows_of(tmp_path / "eval" / "eval.jsonl")
    }
    assert (rows["fenced"]["similarity"], rows["fenced"]["precision"]) == (80, 70)
    assert rows["reask"]["similarity_reasons"] == ["sim second try"]
    assert (rows["range"]["similarity"], rows["range"]["precision"]) == (40, 30)
    assert (rows["errors"]["similarity"], rows["limited"]["precision"]) == (20, 90)
    broken = rows["broken"]
    assert broken["similarity"] is None and broken["judge_failures"] == 1
    assert "malformed answer 3 times" in broken["judge_errors"][0]
    assert took >= 1.0  # the 429's Retry-After of 1 s was waited out (backoff base: 10 ms)
    assert s.stats()["script_pending"] == 0
    cost = report["cost"]
    assert (cost["rate_limited"], cost["server_errors"]) == (1, 2)
    assert cost["reasks"] == 1 + 2 + 2 and cost["json_failed"] == 1
    assert report["judgements"] == {"requested": 6, "ok": 5, "failed": 1, "rows_without_score": 1}
    worst = report["worst"]
    assert [w["sample_id"] for w in worst] == ["s004", "s002", "s001", "s000", "s005"]
    assert worst[0]["precision_reasons"] == ["prec because"]
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "1 of 6 judgements failed" in md and "`s003` #0: " in md


def test_the_cache_makes_a_rerun_free(sim: RunningSim, tmp_path: Path) -> None:
    answers = write_answers(tmp_path / "a", ["one", "two", "three"])
    cfg = config(sim, tmp_path, answers, eval_repeat=2)
    first = run_evaluation(cfg).data
    assert sim.sim.stats()["requests"] == 6
    sim.sim.reset()
    second = run_evaluation(cfg).data
    assert sim.sim.stats()["requests"] == 0
    assert second["cost"]["calls"] == 0 and second["cost"]["cache_hits"] == 6
    assert second["scores"] == first["scores"]
    # One changed answer: only its judgements are asked for.
    write_answers(tmp_path / "a", ["one", "two", "three, changed"])
    run_evaluation(cfg)
    assert sim.sim.stats()["requests"] == 2
    # Another judge model is another cache key.
    sim.sim.reset()
    run_evaluation(cfg.model_copy(update={"service_model_name": "gemini-2.5-pro"}))
    assert sim.sim.stats()["by_model"] == {"gemini-2.5-pro": 6}


def test_a_replaced_prompt_template(sim: RunningSim, tmp_path: Path) -> None:
    answers = write_answers(tmp_path / "a", ["x"])
    tmpl = tmp_path / "judge.txt"
    tmpl.write_text(
        'CUSTOM-JUDGE {"shape": "json"}\n{instruction}\n{target_response}\n{candidate_response}\n'
    )
    sim.sim.script([judged(33, 44)], match='CUSTOM-JUDGE {"shape": "json"}\nDescribe item 0.')
    report = run_evaluation(config(sim, tmp_path, answers, prompt_tmpl_path=tmpl)).data
    assert report["scores"]["similarity"]["mean"] == 33
    # Placeholders are filled in one pass: one typed inside an answer stays text.
    assert render("{instruction}|{candidate_response}", "say {candidate_response}", "t", "c") == (
        "say {candidate_response}|c"
    )
    tmpl.write_text("no placeholders here")
    with pytest.raises(ConfigError, match="missing placeholder"):
        run_evaluation(config(sim, tmp_path, answers, prompt_tmpl_path=tmpl))


def test_evaluation_completed_is_published(sim: RunningSim, tmp_path: Path) -> None:
    answers = write_answers(
        tmp_path / "a", [f"Item {i} is a small blue box with a lid." for i in (0, 1)]
    )
    bus_url = f"sqlite:///{tmp_path / 'events.db'}"
    run_evaluation(config(sim, tmp_path, answers, bus=bus_url))

    async def read() -> list[Any]:
        async with open_bus(bus_url) as bus:
            return await bus.consume("evaluation.completed", "test", "t1")

    deliveries = asyncio.run(read())
    assert len(deliveries) == 1
    event = deliveries[0].event
    assert isinstance(event, PipelineEvent) and event.type == "evaluation.completed"
    assert event.data["rows"] == 2 and event.data["gate_passed"] is True
    assert event.data["means"]["similarity"] == 100.0 and event.data["judge_simulated"] is True
    assert event.data["report"] == str(tmp_path / "eval" / "report.json")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    with running_hub_stub(token="hub-token") as stub:
        monkeypatch.setenv("HF_TOKEN", "hub-token")
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield stub


def test_eval_rows_pushed_to_the_hub(sim: RunningSim, tmp_path: Path, hub: HubStub) -> None:
    answers = write_answers(tmp_path / "a", ["x", "y"])
    cfg = config(
        sim,
        tmp_path,
        answers,
        push_eval_to_hf_hub=True,
        eval_ds_id="team/evals",
        hub_endpoint=hub.url,
    )
    run_evaluation(cfg)
    run_evaluation(cfg)  # replace (the default): still one shard
    files = hub.repos["team/evals"].files
    shards = [p for p in files if p.endswith(".parquet")]
    assert len(shards) == 1 and shards[0].startswith("data/eval-")
    table = pq.read_table(io.BytesIO(files[shards[0]]))
    assert {"similarity_scores", "precision_scores", "evaluators", "dates"} <= set(
        table.column_names
    )
    assert {"similarity_reasons", "precision_reasons", "rouge_l", "chrf"} <= set(table.column_names)


def test_seed_parity_flags_and_the_example_config() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, EvaluateConfig)
    args = parser.parse_args(
        [
            "--from-config",
            str(REPO / "config" / "evaluation.yaml"),
            "--service-llm-provider",
            "litellm",
            "--service-llm-api-key",
            "sk-1",
            "--service-model-name",
            "openai/gpt-4o",
            "--rate-limit-per-minute",
            "120",
            "--prompt-tmpl-path",
            "p.txt",
            "--lm-response-ds-id",
            "org/answers",
            "--lm-response-ds-split",
            "batch_infer",
            "--eval-repeat",
            "5",
            "--eval-workers",
            "3",
            "--avg-similarity-threshold",
            "85",
            "--avg-precision-threshold",
            "80",
            "--push-eval-to-hf-hub",
            "--eval-ds-id",
            "org/evals",
            "--eval-ds-split",
            "eval2",
        ]
    )
    cfg = resolve_config(EvaluateConfig, args)
    assert (cfg.service_llm_provider, cfg.service_model_name, cfg.api_key()) == (
        "litellm",
        "openai/gpt-4o",
        "sk-1",
    )
    assert (cfg.eval_repeat, cfg.eval_workers, cfg.rate_limit_per_minute) == (5, 3, 120)
    assert (cfg.avg_similarity_threshold, cfg.avg_precision_threshold) == (85, 80)
    assert cfg.push_eval_to_hf_hub and cfg.eval_ds_id == "org/evals"
    assert EvaluateConfig(lm_response_ds_id="x").eval_repeat == 3
    assert EvaluateConfig(lm_response_ds_id="x").avg_precision_threshold == 90
    with pytest.raises(ConfigError, match="avg-precision-threshold"):
        flags = ["--lm-response-ds-id", "x", "--avg-precision-threshold", "101"]
        resolve_config(EvaluateConfig, parser.parse_args(flags))


def test_answers_without_the_columns_are_one_line_errors(sim: RunningSim, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "batch_infer.jsonl").write_text('{"instructions": "x", "answer": "y"}\n')
    with pytest.raises(StandbyError, match="missing columns target_responses, candidate_responses"):
        run_evaluation(config(sim, tmp_path, folder))
    assert sim.sim.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("target", "other"),
    [
        ("東京は日本の首都です。", "大阪は日本の都市です。"),
        ("Привет, как дела?", "Пока, как погода?"),
        ("The capital of France is Paris.", "The capital of Spain is Madrid."),
    ],
)
def test_rouge_l_reads_every_script(target: str, other: str) -> None:
    """rouge-score's default tokenizer drops non-Latin text, so identical Japanese scored 0."""
    metrics = TextMetrics()
    same_rouge, same_chrf = metrics(target, target)
    assert same_rouge == 100.0 and same_chrf == 100.0
    rouge, _ = metrics(other, target)
    assert 0.0 < rouge < 100.0  # shares some tokens, not all


def test_rouge_l_on_english_matches_rouge_scores_own_tokenizer() -> None:
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    target, candidate = "The cat sat on the mat today.", "A cat sat on a mat."
    default = rouge_scorer.RougeScorer(["rougeL"]).score(target, candidate)["rougeL"].fmeasure
    assert TextMetrics()(candidate, target)[0] == round(default * 100, 3)
