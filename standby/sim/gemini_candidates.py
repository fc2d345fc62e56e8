"""Several candidates and token log probabilities in the SIMULATED Gemini (not Google's model).

``generationConfig.candidateCount: k`` gets ``k`` distinct, deterministic candidates: the
first is the usual answer, candidate ``i`` the same words rotated by ``i`` (a one-word answer,
function calls and a JSON answer stay the same), each with its ``index``. Streamed, each body
carries the next piece of every candidate that has one, and a candidate's ``finishReason``
comes with its last piece.

``responseLogprobs: true`` adds ``logprobsResult`` to each candidate (for the tokens of that
body when streamed; :mod:`standby.sim.logprobs`); ``logprobs: k`` adds the ``k`` most likely
tokens per step, the chosen one first, in descending order. Not a real model's numbers:
plausible shapes, checked against the ``google-genai`` types in the tests.
"""

from __future__ import annotations

from dataclasses import replace

from standby.sim.answers import Answer, count_tokens


def variant(ans: Answer, index: int, json_mode: bool = False) -> Answer:
    """Candidate ``index`` of an answer (calls, thoughts and JSON answers are the same in
    every one)."""
    words = ans.text.split(" ")
    if index == 0 or ans.calls or json_mode or len(words) < 2:
        return ans
    k = index % len(words)
    text = " ".join(words[k:] + words[:k])
    return replace(ans, text=text, tokens=count_tokens(text))
