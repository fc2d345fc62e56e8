"""What the SIMULATED Gemini checks of a request's controls, per model, as Google documents it:
``generationConfig.thinkingConfig`` and the penalties, ``safetySettings`` and ``serviceTier``
are read as google-genai's own types (``types.ThinkingConfig``, ``types.GenerationConfig``,
``types.SafetySetting``, ``types.ServiceTier``), then held to each model's rules:

- ``thinkingLevel`` and ``thinkingBudget`` together are a 400;
- Gemini 2.x takes no ``thinkingLevel``; a Gemini 3 model takes only the levels of its card
  (3.7 and 3.8 Flash and 3.1 Pro: LOW / MEDIUM / HIGH; 3 Pro preview: LOW / HIGH; earlier 3.x
  Flash and Flash-Lite also MINIMAL);
- a 2.5 budget must be in the model's range (Flash 0-24576, Flash-Lite 0 or 512-24576, Pro
  128-32768: Pro cannot switch thinking off), -1 being dynamic;
- 3.5 Flash-Lite refuses custom presence / frequency penalties.

This table is written from Google's pages independently of the provider's mapping
(``standby.providers.gemini_controls``), so that a wrong mapping fails against it. Names it does
not know are held only to the type checks (and, for ``gemini-2*``, to "no thinkingLevel").

Simulated usage: a request that sets a level or budget is charged thought tokens for it
(``thoughtsTokenCount``: MINIMAL 8, LOW 32, MEDIUM 96, HIGH 256, XHIGH 512; a budget b, b // 64;
dynamic 128); a system instruction of at least ``CACHED_AT`` words counts as an implicit cache
hit (``cachedContentTokenCount`` = its tokens).
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from standby.sim.surface import _CACHE_BODIES_UP_TO

CACHED_AT = 64

_ALL = frozenset({"MINIMAL", "LOW", "MEDIUM", "HIGH"})
_NO_MINIMAL = frozenset({"LOW", "MEDIUM", "HIGH"})
_LEVELS: dict[str, frozenset[str]] = {
    "gemini-3-pro-preview": frozenset({"LOW", "HIGH"}),
    "gemini-3-flash-preview": _ALL,
    "gemini-3.1-pro-preview": _NO_MINIMAL,
    "gemini-3.1-pro": _NO_MINIMAL,
    "gemini-3.1-flash-lite": _ALL,
    "gemini-3.5-flash": _ALL,
    "gemini-3.5-flash-lite": _ALL,
    "gemini-3.6-flash": _ALL,
    "gemini-3.7-flash": _NO_MINIMAL,
    "gemini-3.8-flash": _NO_MINIMAL,
}
# (least budget when thinking, most, whether 0 switches thinking off)
_BUDGETS: dict[str, tuple[int, int, bool]] = {
    "gemini-2.5-pro": (128, 32768, False),
    "gemini-2.5-flash": (1, 24576, True),
    "gemini-2.5-flash-lite": (512, 24576, True),
}
_NO_PENALTIES = frozenset({"gemini-3.5-flash-lite"})
_THOUGHTS = {"MINIMAL": 8, "LOW": 32, "MEDIUM": 96, "HIGH": 256, "XHIGH": 512}


def _known(model: str, table: dict[str, Any]) -> str | None:
    """The longest name in ``table`` that ``model`` is or begins with (``-preview-05-06``...)."""
    name = model.rsplit("/", 1)[-1].lower()
    found = [k for k in table if name == k or name.startswith(k + "-")]
    return max(found, key=len) if found else None


def config_error(model: str, body: bytes) -> str | None:
    """Why Gemini would refuse this request's controls for ``model`` (None: it would not).
    Remembered for small bodies only: a request with inline media can be megabytes."""
    if len(body) <= _CACHE_BODIES_UP_TO:
        return _cached_error(model, body)
    return _error(model, body)


def _error(model: str, body: bytes) -> str | None:
    from google.genai import types  # the SDK's own types say what the API accepts

    data = orjson.loads(body)
    config = data.get("generationConfig") or data.get("generation_config") or {}
    if not isinstance(config, dict):
        return None  # the request parser says what is wrong with it
    settings = data.get("safetySettings", data.get("safety_settings")) or []
    if not isinstance(settings, list):
        return "Invalid JSON payload received. safetySettings must be a list. (simulated Gemini)"
    mine = {k: config[k] for k in _OWN_FIELDS if k in config}
    thinking = mine.get("thinkingConfig", mine.get("thinking_config"))
    enums: list[tuple[str, Any, type[Enum]]] = [
        ("serviceTier", data.get("serviceTier", data.get("service_tier")), types.ServiceTier)
    ]
    if isinstance(thinking, dict):
        level = thinking.get("thinkingLevel", thinking.get("thinking_level"))
        enums.append(("generationConfig.thinkingConfig.thinkingLevel", level, types.ThinkingLevel))
    for i, s in enumerate(settings):
        if isinstance(s, dict):
            enums.append((f"safetySettings[{i}].category", s.get("category"), types.HarmCategory))
            threshold = s.get("threshold")
            enums.append((f"safetySettings[{i}].threshold", threshold, types.HarmBlockThreshold))
    for where, value, enum in enums:
        # google-genai lets unknown names through (with a warning); the API does not.
        if value is not None and str(value).lower() not in {str(m.value).lower() for m in enum}:
            return f"Invalid value at '{where}', {value!r}. (simulated Gemini)"
    try:
        gen = types.GenerationConfig.model_validate(mine)
        for s in settings:
            types.SafetySetting.model_validate(s)
    except ValidationError as e:
        return f"Invalid JSON payload received. {str(e).splitlines()[0]} (simulated Gemini)"
    penalized = gen.presence_penalty is not None or gen.frequency_penalty is not None
    if penalized and _known(model, dict.fromkeys(_NO_PENALTIES)) is not None:
        return "Penalty is not enabled for this model. (simulated Gemini)"
    parsed = gen.thinking_config
    return None if parsed is None else _thinking_error(model, parsed)


_cached_error = lru_cache(maxsize=1024)(_error)

# The generationConfig fields this module holds to google-genai's types; the rest are the
# request parser's (gemini_native) to check.
_OWN_FIELDS = (
    "thinkingConfig",
    "thinking_config",
    "presencePenalty",
    "presence_penalty",
    "frequencyPenalty",
    "frequency_penalty",
)


def _thinking_error(model: str, thinking: Any) -> str | None:
    level = thinking.thinking_level
    budget = thinking.thinking_budget
    if level is not None and budget is not None:
        return (
            "You cannot use both thinking_level and the legacy thinking_budget parameter in the "
            "same request. (simulated Gemini)"
        )
    name = model.rsplit("/", 1)[-1].lower()
    if level is not None:
        value = str(level.value).upper()
        if name.startswith("gemini-2") or name.startswith("gemini-1"):
            return f"Thinking level is not supported for this model: {model}. (simulated Gemini)"
        known = _known(model, _LEVELS)
        if known is not None and value not in _LEVELS[known]:
            return (
                f"Thinking level {value} is not supported for this model. Supported levels: "
                f"{', '.join(sorted(_LEVELS[known]))}. (simulated Gemini)"
            )
    if budget is not None and budget != -1:
        known = _known(model, _BUDGETS)
        if known is not None:
            low, high, off = _BUDGETS[known]
            if budget == 0 and not off:
                return "Budget 0 is invalid. This model only works in thinking mode. (simulated)"
            if budget != 0 and not low <= budget <= high:
                return (
                    f"The thinking budget {budget} is invalid. Please choose a value between "
                    f"{low} and {high}. (simulated Gemini)"
                )
    return None


def thought_tokens(config: dict[str, Any]) -> int:
    """The thought tokens the simulated model spends for a (valid) ``generationConfig``."""
    thinking = config.get("thinkingConfig", config.get("thinking_config"))
    if not isinstance(thinking, dict):
        return 0
    level = thinking.get("thinkingLevel", thinking.get("thinking_level"))
    if isinstance(level, str):
        return _THOUGHTS.get(level.upper(), 0)
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    if isinstance(budget, int) and not isinstance(budget, bool):
        return 128 if budget == -1 else max(budget, 0) // 64
    return 0


def cached_tokens(instruction_tokens: int) -> int:
    """The prompt tokens an implicit cache hit covers: a long system instruction."""
    return instruction_tokens if instruction_tokens >= CACHED_AT else 0
