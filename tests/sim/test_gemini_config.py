"""The simulated Gemini holds thinking, penalties, safety settings and service tier to each
model's documented rules, seen through google-genai (which sends what its types allow)."""

from __future__ import annotations

import pytest
from google import genai
from google.genai import errors, types

from tests.fixtures.sim import RunningSim

PROMPT = "Say hello"


def ask(client: genai.Client, model: str, **config: object) -> types.GenerateContentResponse:
    return client.models.generate_content(
        model=model, contents=PROMPT, config=types.GenerateContentConfig(**config)
    )


@pytest.mark.parametrize(
    ("model", "config", "says"),
    [
        # Gemini 2.5 takes budgets, not levels.
        ("gemini-2.5-flash", {"thinking_level": "LOW"}, "not supported for this model"),
        # Never both.
        ("gemini-3.8-flash", {"thinking_level": "LOW", "thinking_budget": 1024}, "both"),
        # 3.7 and 3.8 Flash and 3.1 Pro have no MINIMAL; 3 Pro preview no MEDIUM.
        ("gemini-3.8-flash", {"thinking_level": "MINIMAL"}, "MINIMAL is not supported"),
        ("gemini-3.1-pro-preview", {"thinking_level": "MINIMAL"}, "MINIMAL is not supported"),
        ("gemini-3-pro-preview", {"thinking_level": "MEDIUM"}, "MEDIUM is not supported"),
        # 2.5 Pro cannot switch thinking off; budgets have ranges.
        ("gemini-2.5-pro", {"thinking_budget": 0}, "only works in thinking mode"),
        ("gemini-2.5-flash-lite", {"thinking_budget": 100}, "between 512 and 24576"),
        ("gemini-2.5-flash", {"thinking_budget": 30000}, "between 1 and 24576"),
    ],
)
def test_thinking_gemini_refuses(
    client: genai.Client, model: str, config: dict[str, object], says: str
) -> None:
    with pytest.raises(errors.ClientError) as info:
        ask(client, model, thinking_config=types.ThinkingConfig(**config))  # type: ignore[arg-type]
    assert info.value.code == 400
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("model", "config"),
    [
        ("gemini-2.5-flash", {"thinking_budget": 0}),
        ("gemini-2.5-pro", {"thinking_budget": -1}),
        ("gemini-3.8-flash", {"thinking_level": "LOW"}),
        ("gemini-3.1-flash-lite", {"thinking_level": "MINIMAL"}),
        ("gemini-3.8-flash", {"thinking_budget": 1024}),  # accepted for compatibility
    ],
)
def test_thinking_gemini_takes(client: genai.Client, model: str, config: dict[str, object]) -> None:
    ask(client, model, thinking_config=types.ThinkingConfig(**config))  # type: ignore[arg-type]


def test_thought_tokens_follow_the_level(client: genai.Client) -> None:
    def thoughts(level: str) -> int | None:
        config = types.ThinkingConfig(thinking_level=level)  # type: ignore[arg-type]
        meta = ask(client, "gemini-3.8-flash", thinking_config=config).usage_metadata
        assert meta is not None
        return meta.thoughts_token_count

    assert thoughts("LOW") == 32
    assert thoughts("HIGH") == 256


def test_penalties_safety_settings_and_service_tier(client: genai.Client) -> None:
    safety = [
        types.SafetySetting(
            category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
            threshold=types.HarmBlockThreshold.BLOCK_NONE,
        )
    ]
    ask(
        client,
        "gemini-3.8-flash",
        presence_penalty=0.5,
        frequency_penalty=0.5,
        safety_settings=safety,
        service_tier=types.ServiceTier.FLEX,
    )
    with pytest.raises(errors.ClientError) as info:
        ask(client, "gemini-3.5-flash-lite", presence_penalty=0.5)
    assert "Penalty is not enabled" in str(info.value)


async def test_unknown_enum_names_are_refused(sim: RunningSim) -> None:
    """google-genai lets unknown enum names through with a warning; Gemini does not."""
    import aiohttp

    url = f"{sim.url}/v1beta/models/gemini-3.8-flash:generateContent"
    contents = [{"role": "user", "parts": [{"text": PROMPT}]}]
    bad = [
        {"generationConfig": {"thinkingConfig": {"thinkingLevel": "EXTREME"}}},
        {"safetySettings": [{"category": "HARM_CATEGORY_RUDE", "threshold": "OFF"}]},
        {"serviceTier": "gold"},
    ]
    async with aiohttp.ClientSession() as s:
        for extra in bad:
            async with s.post(url, json={"contents": contents, **extra}) as resp:
                assert resp.status == 400, extra
                assert "Invalid value" in (await resp.json())["error"]["message"]
