"""The service-LLM client against the simulated Gemini over HTTP: structured answers, fences,
re-asks, give-ups, 429s with Retry-After, 5xx, timeouts, pacing and the settings."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from standby.errors import ConfigError
from standby.service_llm import (
    Pacer,
    ServiceLLM,
    ServiceLLMConfigError,
    ServiceLLMSettings,
    backoff_delay,
    extract_json,
)
from standby.service_llm.jsonout import MalformedOutput, inline_refs, parse_output
from standby.toolconfig import add_config_flags, resolve_config
from tests.fixtures.sim import SIM_KEY, RunningSim


class Verdict(BaseModel):
    score: Annotated[int, Field(ge=1, le=100)]
    reason: str


def settings(sim: RunningSim, **kw: Any) -> ServiceLLMSettings:
    base: dict[str, Any] = {
        "service_llm_base_url": sim.url,
        "service_llm_api_key": sim.api_key or "any",
        "rate_limit_per_minute": 60_000,
        "service_llm_backoff_s": 0.01,
        "service_llm_max_backoff_s": 0.05,
        "service_llm_max_retries": 3,
        "service_llm_timeout_s": 5,
    }
    return ServiceLLMSettings(**{**base, **kw})


async def test_well_formed_answer_is_validated(sim: RunningSim) -> None:
    async with ServiceLLM(settings(sim)) as llm:
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.ok and result.value is not None
    # The simulator answers a schema with its maximum: the schema reached Gemini's request.
    assert result.value.score == 100
    assert (llm.stats.calls, llm.stats.malformed, llm.stats.reasks) == (1, 0, 0)
    assert llm.stats.prompt_tokens > 0 and llm.stats.completion_tokens > 0


async def test_json_in_a_code_fence(sim: RunningSim) -> None:
    sim.sim.script(['Here you go:\n```json\n{"score": 42, "reason": "close"}\n```'])
    async with ServiceLLM(settings(sim)) as llm:
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.unwrap() == Verdict(score=42, reason="close")
    assert llm.stats.malformed == 0


async def test_malformed_then_a_good_answer_after_a_reask(sim: RunningSim) -> None:
    sim.sim.script(["{score: 42"])
    # Only a request carrying the re-ask (and the bad answer) gets the good reply.
    sim.sim.script(['{"score": 7, "reason": "fine"}'], match="could not be used")
    async with ServiceLLM(settings(sim)) as llm:
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.unwrap().score == 7
    assert (result.answers, llm.stats.reasks, llm.stats.malformed) == (2, 1, 1)
    assert sim.sim.stats()["script_pending"] == 0


async def test_permanently_malformed_is_a_failed_result_and_work_goes_on(sim: RunningSim) -> None:
    sim.sim.script(["not json at all"] * 3)
    async with ServiceLLM(settings(sim, service_llm_reasks=2)) as llm:
        failed = await llm.generate_json("Rate this.", Verdict)
        after = await llm.generate_json("Rate that.", Verdict)
    assert not failed.ok and failed.value is None
    assert failed.error is not None and "malformed answer 3 times" in failed.error
    assert failed.raw == "not json at all"
    assert after.ok
    assert (llm.stats.json_failed, llm.stats.calls) == (1, 4)
    with pytest.raises(Exception, match="no usable answer"):
        failed.unwrap()


async def test_out_of_range_score_is_asked_again(sim: RunningSim) -> None:
    sim.sim.script(['{"score": 150, "reason": "too high"}', '{"score": 0, "reason": "too low"}'])
    sim.sim.script(['{"score": 55, "reason": "ok"}'])
    async with ServiceLLM(settings(sim)) as llm:
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.unwrap().score == 55
    assert llm.stats.malformed == 2


async def test_a_429_burst_honours_retry_after_for_every_worker(sim: RunningSim) -> None:
    sim.sim.script([{"fault": "error-429-retry-1"}] * 3)
    async with ServiceLLM(settings(sim), concurrency=3) as llm:
        began = time.monotonic()
        results = await asyncio.gather(*(llm.generate_json(f"q{i}", Verdict) for i in range(3)))
        took = time.monotonic() - began
    assert all(r.ok for r in results)
    assert llm.stats.rate_limited == 3 and llm.stats.retries == 3
    # The backoff base is 10 ms: only Retry-After explains waiting a second.
    assert 1.0 <= took < 3.0


async def test_server_errors_are_retried_with_backoff(sim: RunningSim) -> None:
    sim.sim.script([{"fault": "error-500"}, {"fault": "error-503"}, {"fault": "reset"}])
    async with ServiceLLM(settings(sim)) as llm:
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.ok
    assert (llm.stats.server_errors, llm.stats.retries, llm.stats.calls) == (2, 3, 4)


async def test_retries_run_out_into_a_failed_result(sim: RunningSim) -> None:
    sim.sim.script([{"fault": "error-503"}] * 4)
    async with ServiceLLM(settings(sim)) as llm:
        failed = await llm.generate_json("Rate this.", Verdict)
        after = await llm.generate_json("Rate this.", Verdict)
    assert failed.error is not None and "after 4 attempts" in failed.error
    assert after.ok
    assert llm.stats.gave_up == 1


async def test_a_slow_answer_times_out_and_is_retried(sim: RunningSim) -> None:
    sim.sim.script([{"fault": "slow-3000"}])
    async with ServiceLLM(settings(sim, service_llm_timeout_s=0.3)) as llm:
        began = time.monotonic()
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.ok and time.monotonic() - began < 2
    assert llm.stats.timeouts == 1


async def test_a_bad_key_stops_the_run(sim_with_key: RunningSim) -> None:
    async with ServiceLLM(settings(sim_with_key, service_llm_api_key="wrong")) as llm:
        with pytest.raises(ServiceLLMConfigError, match="API key not valid"):
            await llm.generate_json("Rate this.", Verdict)
    assert llm.stats.calls == 1  # not retried


async def test_the_right_key_is_sent(sim_with_key: RunningSim) -> None:
    async with ServiceLLM(settings(sim_with_key, service_llm_api_key=SIM_KEY)) as llm:
        assert (await llm.complete("hello")).text


async def test_requests_are_paced_not_burst(sim: RunningSim) -> None:
    async with ServiceLLM(settings(sim, rate_limit_per_minute=600), concurrency=8) as llm:
        began = time.monotonic()
        await asyncio.gather(*(llm.complete(f"q{i}") for i in range(6)))
        took = time.monotonic() - began
    # Six calls at one per 100 ms: the last leaves 500 ms after the first, none earlier.
    assert 0.49 <= took < 1.5


async def test_rate_limiter_spaces_acquisitions_evenly() -> None:
    limiter = Pacer(per_minute=1200)  # 50 ms apart
    stamps: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        stamps.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(5)))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(g >= 0.045 for g in gaps), gaps


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    assert all(0.5 <= backoff_delay(0, 1.0, 60) <= 1.0 for _ in range(50))
    assert all(4.0 <= backoff_delay(3, 1.0, 60) <= 8.0 for _ in range(50))
    assert all(backoff_delay(10, 1.0, 5) <= 5.0 for _ in range(50))
    assert backoff_delay(0, 0.01, 0.05, retry_after=7) >= 7


async def test_a_json_schema_dict_is_validated_too(sim: RunningSim) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["label"],
    }
    sim.sim.script(['{"label": "maybe"}'])
    async with ServiceLLM(settings(sim)) as llm:
        result = await llm.generate_json("Yes or no?", schema)
    assert result.unwrap() == {"label": "yes"}  # re-asked; the simulator picks the first enum
    assert llm.stats.malformed == 1


def test_extract_json_cases() -> None:
    assert extract_json('  {"a": 1} ') == {"a": 1}
    assert extract_json('```\n{"a": 2}\n```') == {"a": 2}
    assert extract_json('Sure! {"a": 3} Hope this helps.') == {"a": 3}
    for bad in ("", "   ", "{a: 1}", "```json\n{```"):
        with pytest.raises(MalformedOutput):
            extract_json(bad)
    with pytest.raises(MalformedOutput, match="score"):
        parse_output('{"score": "high", "reason": "x"}', Verdict)


def test_nested_models_are_sent_without_refs() -> None:
    class Outer(BaseModel):
        inner: Verdict

    schema = inline_refs(Outer.model_json_schema())
    assert "$defs" not in schema
    assert schema["properties"]["inner"]["properties"]["score"]["maximum"] == 100


def test_settings_from_flags_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, ServiceLLMSettings)
    gen = tmp_path / "gen.yaml"
    gen.write_text("temperature: 0.2\nmax_output_tokens: 300\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"service_model_name: gemini-2.5-pro\nservice_llm_gen_config_path: {gen}\n")
    args = parser.parse_args(
        [
            "--from-config",
            str(cfg),
            "--service-llm-api-key",
            "12345",
            "--rate-limit-per-minute",
            "9",
        ]
    )
    s = resolve_config(ServiceLLMSettings, args)
    assert (s.service_model_name, s.rate_limit_per_minute, s.api_key()) == (
        "gemini-2.5-pro",
        9,
        "12345",
    )
    assert "12345" not in repr(s)
    assert s.generation_config() == {"temperature": 0.2, "max_tokens": 300}
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    assert ServiceLLMSettings().api_key() == "from-env"
    assert ServiceLLMSettings(service_llm_provider="litellm").api_key() is None
    gen.write_text("temprature: 0.2\n")
    with pytest.raises(ConfigError, match="temprature"):
        s.generation_config()


async def test_generation_config_reaches_the_request(sim: RunningSim, tmp_path: Path) -> None:
    gen = tmp_path / "gen.yaml"
    gen.write_text("max_tokens: 3\n")
    async with ServiceLLM(settings(sim, service_llm_gen_config_path=gen)) as llm:
        completion = await llm.complete("Tell me a long story")
    assert completion.finish_reason == "length"
    assert len(completion.text.split()) == 3


# litellm imports more of itself on a first call; depending on what was imported before,
# pydantic warns about its ReadOnly TypedDicts (third-party noise, as in test_litellm.py).
@pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)
async def test_any_litellm_model_as_the_service_llm(sim: RunningSim) -> None:
    # litellm's gemini/ route, pointed at the simulator (the original tools also judged with
    # GPT-4o and Claude through the same seam).
    cfg = settings(
        sim,
        service_llm_provider="litellm",
        service_model_name="gemini/gemini-2.5-flash",
        service_llm_base_url=f"{sim.url}/v1beta",
    )
    sim.sim.script(['```json\n{"score": 64, "reason": "via litellm"}\n```'])
    async with ServiceLLM(cfg) as llm:
        result = await llm.generate_json("Rate this.", Verdict)
    assert result.unwrap() == Verdict(score=64, reason="via litellm")
    assert llm.model_id == "gemini/gemini-2.5-flash"
    assert sim.sim.stats()["by_model"] == {"gemini-2.5-flash": 1}


async def test_a_hold_off_also_delays_callers_already_waiting() -> None:
    limiter = Pacer(per_minute=600)  # 100 ms apart
    began = time.monotonic()
    await limiter.acquire()  # the first slot is now

    async def second() -> float:
        await limiter.acquire()  # reserved for +100 ms...
        return time.monotonic() - began

    task = asyncio.create_task(second())
    await asyncio.sleep(0.02)
    limiter.hold_off(0.4)  # ...when a Retry-After of 400 ms arrives
    assert await task >= 0.4


async def test_the_key_never_reaches_the_logs(
    sim_with_key: RunningSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    sim_with_key.sim.script([{"fault": "error-503"}])
    cfg = settings(sim_with_key, service_llm_api_key=SIM_KEY)
    async with ServiceLLM(cfg) as llm:
        assert (await llm.generate_json("Rate this.", Verdict)).ok
    assert "retry 1" in caplog.text  # the retry was logged, the key was not
    assert SIM_KEY not in caplog.text and SIM_KEY not in repr(cfg) and SIM_KEY not in str(cfg)
