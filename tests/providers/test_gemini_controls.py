"""What the Gemini provider sends besides the conversation, against the simulated Gemini, which
reads it as google-genai's types and holds it to each model's documented rules
(``standby.sim.gemini_config``): thinking from ``reasoning_effort`` (levels on Gemini 3, budgets
on 2.5), penalties, safety settings, service tier; usage details; every finish reason; a
conversation of system messages only."""

from __future__ import annotations

from typing import Any, get_args

import orjson
import pytest
from google.genai import types
from pydantic import ValidationError

from standby.config import GeminiBackend, SafetySetting
from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Message
from standby.providers.gemini import GeminiProvider
from standby.providers.gemini_controls import EFFORTS, Controls
from standby.providers.gemini_wire import (
    BLOCKED_REASONS,
    FAILED_REASONS,
    LENGTH_REASONS,
    Parsed,
    request_body,
)
from tests.fixtures.providers import Start
from tests.fixtures.sim import RunningSim

HELLO = Message("user", "Say hello")
GEMINI_3 = [
    "gemini-3.8-flash",
    "gemini-3.7-flash",
    "gemini-3.6-flash",
    "gemini-3.5-flash-lite",
    "gemini-3.1-flash-lite",
    "gemini-3.1-pro-preview",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
]
GEMINI_25 = ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"]


def gemini(sim: RunningSim, model: str, **kw: Any) -> GeminiProvider:
    return GeminiProvider(
        "gemini", GeminiBackend(type="gemini", model=model, base_url=sim.url, **kw)
    )


def sent(sim: RunningSim, last: int = 1) -> list[dict[str, Any]]:
    """The last request bodies the simulator received."""
    return [orjson.loads(b) for b in list(sim.sim.received)[-last:]]


@pytest.mark.parametrize("model", GEMINI_3 + GEMINI_25)
async def test_every_effort_reaches_every_model_as_a_value_it_accepts(
    sim: RunningSim, started: Start, model: str
) -> None:
    p = await started(gemini(sim, model))
    for effort in EFFORTS:
        answer = await p.complete(ChatRequest(messages=(HELLO,), reasoning_effort=effort))
        assert answer.text  # the simulator refuses a level or budget the model does not take
    thinking = [b["generationConfig"]["thinkingConfig"] for b in sent(sim, len(EFFORTS))]
    key = "thinkingBudget" if model in GEMINI_25 else "thinkingLevel"
    assert all(list(t) == [key] for t in thinking)


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-3.8-flash", "none", {"thinkingLevel": "LOW"}),
        ("gemini-3.8-flash", "minimal", {"thinkingLevel": "LOW"}),
        ("gemini-3.8-flash", "medium", {"thinkingLevel": "MEDIUM"}),
        ("gemini-3.8-flash", "max", {"thinkingLevel": "HIGH"}),
        ("gemini-3.1-flash-lite", "none", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3.1-pro-preview", "xhigh", {"thinkingLevel": "HIGH"}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH"}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
        ("gemini-2.5-flash", "max", {"thinkingBudget": 24576}),
        ("gemini-2.5-pro", "max", {"thinkingBudget": 32768}),
        ("gemini-2.0-flash", "high", None),
    ],
)
def test_the_documented_table(model: str, effort: str, thinking: dict[str, Any] | None) -> None:
    """Rows of docs/parameters.md's table."""
    config = GeminiBackend(type="gemini", model=model)
    req = ChatRequest(messages=(HELLO,), reasoning_effort=effort)  # type: ignore[arg-type]
    body = request_body(req, Controls.of(config))
    assert body["generationConfig"].get("thinkingConfig") == thinking
    types.GenerateContentConfig.model_validate(body["generationConfig"])  # google-genai's type


async def test_the_backend_default_applies_when_the_request_sends_none(
    sim: RunningSim, started: Start
) -> None:
    p = await started(gemini(sim, "gemini-3.8-flash", reasoning_effort="low"))
    await p.complete(ChatRequest(messages=(HELLO,)))
    await p.complete(ChatRequest(messages=(HELLO,), reasoning_effort="high"))
    first, second = sent(sim, 2)
    assert first["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}
    assert second["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH"}
    plain = await started(gemini(sim, "gemini-3.8-flash"))
    await plain.complete(ChatRequest(messages=(HELLO,)))
    assert "thinkingConfig" not in sent(sim)[0]["generationConfig"]


async def test_thought_and_cached_tokens_are_usage_details(sim: RunningSim, started: Start) -> None:
    p = await started(gemini(sim, "gemini-3.8-flash"))
    request = ChatRequest(messages=(HELLO,), reasoning_effort="high")
    whole = await p.complete(request)
    last = [d async for d in p.stream(request)][-1]
    plain = await p.complete(ChatRequest(messages=(HELLO,)))
    assert whole.usage.reasoning_tokens == 256  # the simulator's HIGH
    assert whole.usage.completion_tokens == plain.usage.completion_tokens + 256
    assert last.usage is not None and last.usage.reasoning_tokens == 256
    assert plain.usage.reasoning_tokens is None
    assert plain.usage.as_dict().keys() == {"prompt_tokens", "completion_tokens", "total_tokens"}
    instruction = Message("system", " ".join(f"rule{i}" for i in range(80)))
    cached = await p.complete(ChatRequest(messages=(instruction, HELLO)))
    assert cached.usage.cached_tokens == 80
    assert cached.usage.as_dict()["prompt_tokens_details"] == {"cached_tokens": 80}
    off = await started(gemini(sim, "gemini-2.5-flash"))
    none = await off.complete(ChatRequest(messages=(HELLO,), reasoning_effort="none"))
    assert none.usage.reasoning_tokens is None  # budget 0: no thinking at all


async def test_penalties_reach_models_that_take_them(sim: RunningSim, started: Start) -> None:
    request = ChatRequest(messages=(HELLO,), presence_penalty=0.5, frequency_penalty=-0.25)
    await (await started(gemini(sim, "gemini-3.8-flash"))).complete(request)
    gen = sent(sim)[0]["generationConfig"]
    assert (gen["presencePenalty"], gen["frequencyPenalty"]) == (0.5, -0.25)
    # 3.5 Flash-Lite refuses custom penalties (a 400): they are left out there.
    await (await started(gemini(sim, "gemini-3.5-flash-lite"))).complete(request)
    assert not {"presencePenalty", "frequencyPenalty"} & set(sent(sim)[0]["generationConfig"])


async def test_safety_settings_and_service_tier(sim: RunningSim, started: Start) -> None:
    safety = [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "OFF"},
    ]
    p = await started(gemini(sim, "gemini-3.8-flash", safety_settings=safety))
    await p.complete(ChatRequest(messages=(HELLO,), service_tier="flex"))
    await p.complete(ChatRequest(messages=(HELLO,), service_tier="auto"))
    flex, auto = sent(sim, 2)
    assert flex["safetySettings"] == safety
    assert flex["serviceTier"] == "flex"
    assert "serviceTier" not in auto
    for s in flex["safetySettings"]:
        types.SafetySetting.model_validate(s)


def test_safety_settings_are_checked_when_the_config_is_loaded() -> None:
    with pytest.raises(ValidationError, match="category"):
        GeminiBackend(
            type="gemini",
            model="m",
            safety_settings=[{"category": "HARM_CATEGORY_RUDE", "threshold": "OFF"}],
        )
    with pytest.raises(ValidationError, match="given twice"):
        setting = {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}
        GeminiBackend(type="gemini", model="m", safety_settings=[setting, setting])


def test_the_config_names_every_category_and_threshold_of_google_genai() -> None:
    fields = SafetySetting.model_fields
    for name, enum in (("category", types.HarmCategory), ("threshold", types.HarmBlockThreshold)):
        ours = set(get_args(fields[name].annotation))
        theirs = {m.value for m in enum if not m.value.endswith("_UNSPECIFIED")}
        assert ours == theirs


def _finished(reason: str) -> dict[str, Any]:
    payload = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}
        ]
    }
    types.GenerateContentResponse.model_validate(payload)
    return payload


@pytest.mark.parametrize("reason", [m.value for m in types.FinishReason])
def test_every_finish_reason_of_google_genai_is_mapped(reason: str) -> None:
    """A reason google-genai adds fails here until it is placed in one of the sets."""
    named = (
        LENGTH_REASONS | BLOCKED_REASONS | FAILED_REASONS | {"STOP", "FINISH_REASON_UNSPECIFIED"}
    )
    assert reason in named
    if reason in FAILED_REASONS:
        with pytest.raises(UpstreamProtocolError):
            Parsed(_finished(reason), "gemini")
        return
    parsed = Parsed(_finished(reason), "gemini")
    expected = {
        "STOP": "stop",
        "FINISH_REASON_UNSPECIFIED": None,
        **dict.fromkeys(LENGTH_REASONS, "length"),
        **dict.fromkeys(BLOCKED_REASONS, "content_filter"),
    }[reason]
    assert parsed.finish == expected
    assert (parsed.blocked is not None) == (reason in BLOCKED_REASONS)


async def test_a_system_only_conversation_is_answered(sim: RunningSim, started: Start) -> None:
    p = await started(gemini(sim, "gemini-3.8-flash"))
    only = ChatRequest(messages=(Message("system", "Greet the user in one line."),))
    whole = await p.complete(only)
    deltas = [d async for d in p.stream(only)]
    assert whole.text and "".join(d.text for d in deltas) == whole.text
    body = sent(sim)[0]
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Greet the user in one line."}]}
    ]
    assert "systemInstruction" not in body


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-3.8-flash", None, {"includeThoughts": True}),
        ("gemini-3.8-flash", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-2.5-flash", "high", {"thinkingBudget": 16384, "includeThoughts": True}),
        ("gemini-2.0-flash", "high", None),  # no thinking control: nothing to summarize
    ],
)
def test_thought_summaries_ask_for_include_thoughts(
    model: str, effort: str | None, thinking: dict[str, Any] | None
) -> None:
    config = GeminiBackend(type="gemini", model=model)
    req = ChatRequest(messages=(HELLO,), reasoning_effort=effort, thought_summaries=True)  # type: ignore[arg-type]
    body = request_body(req, Controls.of(config))
    assert body["generationConfig"].get("thinkingConfig") == thinking
    types.GenerateContentConfig.model_validate(body["generationConfig"])  # google-genai's type


@pytest.mark.parametrize("model", ["gemini-3.8-flash", "gemini-2.5-flash"])
async def test_a_thought_summary_comes_whole_and_streamed_apart_from_the_text(
    sim: RunningSim, started: Start, model: str
) -> None:
    p = await started(gemini(sim, model))
    asked = ChatRequest(messages=(HELLO,), reasoning_effort="low", thought_summaries=True)
    whole = await p.complete(asked)
    deltas = [d async for d in p.stream(asked)]
    plain = await p.complete(ChatRequest(messages=(HELLO,), reasoning_effort="low"))
    assert whole.reasoning.startswith("Simulated thought about: Say hello.")
    assert whole.text == plain.text  # the summary is never answer text
    assert plain.reasoning == ""
    thoughts = [d.reasoning for d in deltas if d.reasoning]
    assert "".join(thoughts) == whole.reasoning  # streamed before any text
    first_text = next(i for i, d in enumerate(deltas) if d.text)
    assert all(not d.reasoning for d in deltas[first_text + 1 :])  # (one read: one delta)
    assert "".join(d.text for d in deltas) == whole.text
    # Its tokens are thought tokens: reasoning_tokens counts them.
    assert whole.usage.reasoning_tokens is not None and plain.usage.reasoning_tokens is not None
    assert whole.usage.reasoning_tokens > plain.usage.reasoning_tokens
