"""What a Gemini request carries besides the conversation (``Controls``): thinking, penalties,
safety settings and service tier.

OpenAI's ``reasoning_effort`` becomes ``generationConfig.thinkingConfig``, chosen by the model's
name (docs/parameters.md has the table). Thought summaries asked for (the Responses API's
``reasoning.summary``: ``auto``, ``concise`` or ``detailed``, which Gemini does not tell apart)
become ``thinkingConfig.includeThoughts: true``: the answer then carries parts marked
``thought: true`` whose text summarizes the model's thinking (Google's thinking page, "Thought
summaries"), read by ``gemini_wire``.

Gemini 3 and later take a ``thinkingLevel`` from a set that differs by model (Google's thinking
page and each model's card): Flash from 3.7 on LOW / MEDIUM / HIGH; earlier 3.x Flash and every
Flash-Lite also MINIMAL; 3.1 Pro LOW / MEDIUM / HIGH; 3 Pro (preview) LOW / HIGH; Gemini 4
models, whose sets this module does not know one by one, get LOW / MEDIUM / HIGH, which every
model since 3.1 accepts. Gemini 2.5 takes a ``thinkingBudget`` in tokens: Flash 0 (off) or
1-24576, Flash-Lite 0 (off) or 512-24576, Pro 128-32768 (it cannot switch thinking off).
Sending a level a model does not accept, a level to 2.5, or a budget outside its range is a 400
from Gemini: an effort a model cannot honour goes to the nearest value it can (a tie goes up:
the client asked for at least that much). Other models (Gemini 2.0, Gemma) get no
``thinkingConfig`` at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, get_args

from standby.config import GeminiBackend
from standby.openai_models import ReasoningEffort
from standby.protocol import ChatRequest

# Gemini's levels, least thinking first (google-genai's ``types.ThinkingLevel``).
LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH")
EFFORTS: tuple[ReasoningEffort, ...] = get_args(ReasoningEffort)

# Each effort as a position on LEVELS: "none" is below the least level, "max" above the most.
_LEVEL_OF: dict[ReasoningEffort, float] = {
    "none": -1,
    "minimal": 0,
    "low": 1,
    "medium": 2,
    "high": 3,
    "xhigh": 4,
    "max": 5,
}
# Each effort as a 2.5 thinking budget in tokens, before clamping to the model's range.
_BUDGET_OF: dict[ReasoningEffort, int] = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32768,
}

_NAME = re.compile(r"gemini-(\d+)(?:\.(\d+))?-(flash-lite|flash|pro)\b")
# Google's moving aliases, which name the current Gemini 3.x model of each tier.
_LATEST = {
    "gemini-flash-latest": (3, 8, "flash"),
    "gemini-flash-lite-latest": (3, 5, "flash-lite"),
    "gemini-pro-latest": (3, 1, "pro"),
}


@dataclass(frozen=True, slots=True)
class Thinking:
    """How one model is told how much to think: ``levels`` it accepts (Gemini 3+), or a budget
    range ``low``..``high`` where ``off`` says whether 0 switches thinking off (2.5)."""

    levels: tuple[str, ...] = ()
    low: int = 0
    high: int = 0
    off: bool = False

    def config(self, effort: ReasoningEffort) -> dict[str, Any]:
        """The ``thinkingConfig`` for ``effort``."""
        if self.levels:
            want = _LEVEL_OF[effort]
            # The nearest accepted level; on a tie the higher one.
            level = min(
                self.levels, key=lambda lv: (abs(LEVELS.index(lv) - want), -LEVELS.index(lv))
            )
            return {"thinkingLevel": level}
        budget = _BUDGET_OF[effort]
        if budget == 0 and self.off:
            return {"thinkingBudget": 0}
        return {"thinkingBudget": max(self.low, min(self.high, budget))}


def _family(model: str) -> tuple[int, int, str] | None:
    """``model``'s (major, minor, tier) for an id such as ``gemini-3.8-flash`` or
    ``models/gemini-2.5-pro``; None for a name outside the Gemini 2+ families."""
    name = model.rsplit("/", 1)[-1].lower()
    if name in _LATEST:
        return _LATEST[name]
    found = _NAME.match(name)
    if found is None:
        return None
    return int(found[1]), int(found[2] or 0), found[3]


def thinking_of(model: str) -> Thinking | None:
    """How ``model`` takes thinking control; None for a model without it."""
    family = _family(model)
    if family is None:
        return None
    major, minor, tier = family
    if (major, minor) == (2, 5):
        if tier == "pro":
            return Thinking(low=128, high=32768)
        return Thinking(low=512 if tier == "flash-lite" else 1, high=24576, off=True)
    if major < 3:
        return None
    if major > 3:
        return Thinking(levels=("LOW", "MEDIUM", "HIGH"))
    if tier == "pro":
        return Thinking(levels=("LOW", "HIGH") if minor == 0 else ("LOW", "MEDIUM", "HIGH"))
    if tier == "flash" and minor >= 7:
        return Thinking(levels=("LOW", "MEDIUM", "HIGH"))
    return Thinking(levels=("MINIMAL", "LOW", "MEDIUM", "HIGH"))


def penalties_accepted(model: str) -> bool:
    """Whether ``model`` takes ``presencePenalty`` / ``frequencyPenalty``: Google's card for
    3.5 Flash-Lite says custom values are an error there (and so on later Flash-Lite)."""
    family = _family(model)
    return family is None or family[2] != "flash-lite" or family[:2] < (3, 5)


def litellm_thinking(model: str, effort: ReasoningEffort) -> dict[str, Any]:
    """``effort`` as litellm's arguments for a Gemini ``model``, giving the ``thinkingConfig``
    of the table above: a level as the lower-case effort litellm maps one to one, a budget
    as its ``thinking`` budget. (Forwarded as is, litellm raises on "max" and on "xhigh" and
    sends MINIMAL and a 0 budget to models that refuse them.) Nothing for a model without
    thinking control."""
    thinking = thinking_of(model)
    if thinking is None:
        return {}
    config = thinking.config(effort)
    if "thinkingLevel" in config:
        return {"reasoning_effort": config["thinkingLevel"].lower()}
    budget = config["thinkingBudget"]
    return {"thinking": {"type": "enabled" if budget else "disabled", "budget_tokens": budget}}


# OpenAI's service tiers as Gemini's ``serviceTier`` (google-genai's ``types.ServiceTier``);
# "auto", "scale" and anything else leave Gemini's default (standard).
SERVICE_TIERS = {"default": "standard", "flex": "flex", "priority": "priority"}


@dataclass(frozen=True, slots=True)
class Controls:
    """What one Gemini backend adds to every request besides the conversation: thinking from
    ``reasoning_effort`` (the request's, else the backend's default), the penalties where the
    model takes them, its ``safetySettings`` and the ``serviceTier``."""

    thinking: Thinking | None = None
    effort: ReasoningEffort | None = None
    penalties: bool = True
    safety: tuple[dict[str, str], ...] = ()

    @classmethod
    def of(cls, config: GeminiBackend) -> Controls:
        return cls(
            thinking=thinking_of(config.model),
            effort=config.reasoning_effort,
            penalties=penalties_accepted(config.model),
            safety=tuple(s.model_dump() for s in config.safety_settings),
        )

    def generation(self, request: ChatRequest, gen: dict[str, Any]) -> None:
        """Add the penalties and ``thinkingConfig`` to ``gen`` (a ``generationConfig``): the
        effort's level or budget, and ``includeThoughts`` when the request asks for thought
        summaries (only to a model with thinking control: others take no ``thinkingConfig``)."""
        if self.penalties:
            if request.presence_penalty is not None:
                gen["presencePenalty"] = request.presence_penalty
            if request.frequency_penalty is not None:
                gen["frequencyPenalty"] = request.frequency_penalty
        if self.thinking is None:
            return
        effort = request.reasoning_effort or self.effort
        if effort is not None:
            thinking = dict(gen.get("thinkingConfig") or {})
            thinking.update(self.thinking.config(effort))
            gen["thinkingConfig"] = thinking
        if request.thought_summaries:
            gen["thinkingConfig"] = {**gen.get("thinkingConfig", {}), "includeThoughts": True}

    def body(self, request: ChatRequest, body: dict[str, Any]) -> None:
        """Add ``safetySettings`` and ``serviceTier`` to a ``GenerateContentRequest``."""
        if self.safety:
            body["safetySettings"] = [dict(s) for s in self.safety]
        tier = SERVICE_TIERS.get(request.service_tier or "")
        if tier is not None:
            body["serviceTier"] = tier


# Nothing added: a request body as the request alone says it.
NO_CONTROLS = Controls()
