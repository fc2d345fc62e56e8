"""What each row of a generation batch asks of the next-token distribution, applied in one
``LogitsProcessor``: ``logit_bias``, ``presence_penalty`` / ``frequency_penalty``, the grammar
of ``response_format`` (``local_grammar``), and ``logprobs`` / ``top_logprobs``.

Rows of one batch may ask for different things (or nothing): each row gets its own bias,
penalties and grammar, so requests batch together whatever their format.

- ``logit_bias`` is added to the row's logits (OpenAI: -100 bans a token, 100 forces it).
- Penalties follow OpenAI's formula over the tokens generated so far:
  ``logit -= presence * (count > 0) + frequency * count``.
- Logprobs are the model's own (``log_softmax`` of its logits before bias, penalties, grammar
  and temperature, as vLLM reports them by default), in OpenAI's ``ChatCompletionTokenLogprob``
  shape; ``Rows`` reads them for the token each row takes.

``generate()`` runs these before its temperature and top-p warpers, so a bias or a penalty is
scaled by the temperature like the logits it changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.numpy
import torch
from transformers import LogitsProcessor

from standby.protocol import ChatRequest
from standby.providers.local_grammar import Grammars

log = logging.getLogger("standby.providers.local")

# OpenAI's floor for a logprob too small to say (and what -inf becomes: JSON has no infinity).
LOGPROB_FLOOR = -9999.0


@dataclass(slots=True)
class RowControls:
    """One row's asks: ``top_logprobs`` None means no logprobs (0: the token's own only)."""

    bias: dict[int, float]
    presence: float
    frequency: float
    matcher: llguidance.LLMatcher | None
    top_logprobs: int | None

    @classmethod
    def of(cls, request: ChatRequest, grammars: Grammars | None, prefix: str = "") -> RowControls:
        """``prefix``: text the answer already starts with (a continued partial answer), which
        the grammar must accept first. ValueError when the format cannot be enforced."""
        matcher = None
        if request.response_format is not None:
            if grammars is None:
                raise ValueError("structured output needs the model's grammar tokenizer")
            matcher = grammars.matcher(request.response_format)
            if prefix and not matcher.consume_tokens(grammars.tokenize(prefix)):
                raise ValueError("the partial answer to continue does not match response_format")
        return cls(
            bias={int(k): float(v) for k, v in (request.logit_bias or {}).items()},
            presence=request.presence_penalty or 0.0,
            frequency=request.frequency_penalty or 0.0,
            matcher=matcher,
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        )


class Controls(LogitsProcessor):
    """The batch's ``LogitsProcessor``; ``Rows`` asks it for each taken token's logprobs."""

    def __init__(
        self,
        rows: list[RowControls],
        vocab_size: int,
        device: Any,
        token_bytes: Callable[[int], bytes],
    ) -> None:
        self.rows = rows
        self.token_bytes = token_bytes
        self.started = False
        self.logprobs: torch.Tensor | None = None
        n = len(rows)
        self.bias: torch.Tensor | None = None
        if any(r.bias for r in rows):
            self.bias = torch.zeros(n, vocab_size, device=device)
            for i, r in enumerate(rows):
                for token, value in r.bias.items():
                    self.bias[i, token] = value
        self.counts: torch.Tensor | None = None
        if any(r.presence or r.frequency for r in rows):
            self.counts = torch.zeros(n, vocab_size, device=device)
            self.presence = torch.tensor([[r.presence] for r in rows], device=device)
            self.frequency = torch.tensor([[r.frequency] for r in rows], device=device)
        self.constrained = [i for i, r in enumerate(rows) if r.matcher is not None]
        # llguidance's numpy helpers: its torch ones torch.compile a kernel at import.
        self.bitmask = llguidance.numpy.allocate_token_bitmask(n, vocab_size)
        self.wants_logprobs = any(r.top_logprobs is not None for r in rows)

    @property
    def active(self) -> bool:
        """Whether any row asks for anything (else ``generate()`` runs without it)."""
        asks = (self.bias, self.counts, self.constrained or None, self.wants_logprobs or None)
        return any(a is not None for a in asks)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.started:
            self._take(input_ids[:, -1])
        self.started = True
        if self.wants_logprobs:
            self.logprobs = torch.log_softmax(scores.float(), dim=-1)
        if self.bias is not None:
            scores = scores + self.bias  # type: ignore[assignment]
        if self.counts is not None:
            penalty = self.presence * (self.counts > 0) + self.frequency * self.counts
            scores = scores - penalty  # type: ignore[assignment]
        if self.constrained:
            scores = self._mask(scores)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        """Each row took ``tokens`` at the last step: count them, move the grammars on."""
        if self.counts is not None:
            self.counts.scatter_add_(1, tokens[:, None], torch.ones_like(self.counts[:, :1]))
        if self.constrained:
            taken = tokens.tolist()
            for i in self.constrained:
                matcher = self.rows[i].matcher
                assert matcher is not None
                if not matcher.is_stopped() and not matcher.is_error():
                    matcher.consume_token(taken[i])

    def _mask(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Rows with a grammar keep only the tokens it allows next (the end of the turn once
        the JSON is complete); a row whose grammar has stopped or failed has ended already."""
        rows = []
        for i in self.constrained:
            matcher = self.rows[i].matcher
            assert matcher is not None
            if matcher.is_error():
                continue
            llguidance.numpy.fill_next_token_bitmask(matcher, self.bitmask, i)
            rows.append(i)
        if not rows:
            return scores
        index = torch.tensor(rows, device=scores.device)
        words = torch.from_numpy(self.bitmask[rows]).to(scores.device)
        bits = (
            words.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32, device=scores.device)
        ) & 1
        allowed = bits.reshape(len(rows), -1)[:, : scores.shape[1]].bool()
        if allowed.shape[1] < scores.shape[1]:  # tokens beyond the tokenizer's vocabulary
            pad = torch.zeros(len(rows), scores.shape[1] - allowed.shape[1], dtype=torch.bool)
            allowed = torch.cat([allowed, pad.to(scores.device)], dim=1)
        scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
        return scores

    def item(self, row: int, token: int) -> dict[str, Any] | None:
        """OpenAI's ``ChatCompletionTokenLogprob`` for the token ``row`` took (None when the
        row asked for no logprobs)."""
        k = self.rows[row].top_logprobs
        if k is None or self.logprobs is None:
            return None
        dist = self.logprobs[row]
        entry = self._entry(token, float(dist[token]))
        top: list[dict[str, Any]] = []
        if k:
            values, ids = torch.topk(dist, k)
            top = [self._entry(t, v) for t, v in zip(ids.tolist(), values.tolist(), strict=True)]
        return {**entry, "top_logprobs": top}

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        raw = self.token_bytes(token)
        value = logprob if math.isfinite(logprob) else LOGPROB_FLOOR
        return {
            "token": raw.decode("utf-8", errors="replace"),
            "logprob": max(value, LOGPROB_FLOOR),
            "bytes": list(raw),
        }
