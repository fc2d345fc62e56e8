"""The online check on real parts: captured fallback answers of the serving version on the bus,
the primary's answers in the pair store, the simulated Gemini as judge. Good answers keep the
version; poor ones (the judge scripted to score them low) roll it back to the one before."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from standby.data.pairs import PairStore, timestamp
from standby.evaluator.config import EvaluateConfig
from standby.evaluator.judge import Judge, load_template
from standby.pipeline.config import PipelineConfig
from standby.pipeline.controller import PipelineMetrics
from standby.pipeline.online import OnlineCheck, served_by
from standby.service_llm import ServiceLLM
from standby.store import ChatMessage, open_bus, open_state
from standby.store.registry import ModelVersion, Registry
from tests.data import candidate
from tests.fixtures.sim import RunningSim
from tests.store.conftest import inference_event

N = 12


def verdict(score: int) -> str:
    return json.dumps(
        {
            "similarity_assessment": {"score": score, "reason": "compared"},
            "precision_assessment": {"score": score, "reason": "compared"},
        }
    )


@pytest.mark.parametrize(("score", "rolled_back"), [(95, False), (40, True)])
async def test_poor_production_answers_roll_the_serving_version_back(
    sim: RunningSim, tmp_path: Path, score: int, rolled_back: bool
) -> None:
    bus_url = f"sqlite:///{tmp_path / 'events.db'}"
    config = PipelineConfig(
        bus=bus_url,
        store=f"sqlite:///{tmp_path / 'pairs.db'}",
        online_sample_rate=1.0,
        online_min_samples=N,
        evaluate={
            "service_llm_base_url": sim.url,
            "service_llm_api_key": "sim-key",
            "rate_limit_per_minute": 6000,
        },
    )
    with PairStore(tmp_path / "pairs.db") as store:
        now = timestamp(datetime.now(UTC))
        store.write(
            candidate(i, response=f"the primary's answer {i}", event_id=f"p{i}", created_at=now)
            for i in range(N)
        )
    async with open_state(bus_url) as state, open_bus(bus_url) as bus:
        registry = Registry(state)
        for v in ("v1", "v2"):
            await registry.register(
                ModelVersion(version=v, backend="gemma", adapter=f"/adapters/{v}")
            )
            await registry.promote(v)
        v2 = await registry.get("v2")
        events = [
            inference_event(
                i,
                provenance="fallback",
                backend="gemma",
                response=f"the fallback's answer {i}",
                model_version=served_by(v2),
                messages=[ChatMessage(role="user", content=f"question {i}")],
            )
            for i in range(N)
        ]
        # Not eligible: a primary answer, an older version's answer, a prompt without a pair.
        events += [
            inference_event(100),
            inference_event(
                101, provenance="fallback", backend="gemma", model_version="/adapters/v1"
            ),
            inference_event(
                102, provenance="fallback", backend="gemma", model_version=served_by(v2)
            ),
        ]
        await bus.publish_many("inference.completed", events)
        sim.sim.script([verdict(score)] * N)

        metrics = PipelineMetrics()
        check = OnlineCheck(config, state, bus, metrics)
        settings = EvaluateConfig.model_validate({**config.evaluate, "lm_response_ds_id": "x"})
        async with ServiceLLM(settings) as llm:
            with PairStore(tmp_path / "pairs.db") as store:
                judged = await check.step(Judge(llm, load_template(None)), store)
        assert judged == N
        serving = await registry.serving("gemma")
        assert serving is not None
        assert serving.version == ("v1" if rolled_back else "v2")
        text = generate_latest(metrics.registry).decode()
        assert f'standby_fallback_online_score{{criterion="precision"}} {float(score)}' in text
        if rolled_back:
            assert (
                "online score over 12 answers: similarity 40.0 < 90"
                in (await registry.get("v2")).reasons[0]
            )
            rolled = 'standby_pipeline_runs_total{outcome="rolled_back",stage="online_check"} 1.0'
            assert rolled in text
            assert len(await bus.consume("model.rolled_back", "t", "t")) == 1
