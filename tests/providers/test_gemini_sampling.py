"""OpenAI's sampling fields reach Gemini under Gemini's names, in a ``generationConfig`` that
google-genai's own type reads back with the same values (the README's parameter table cites
this test for temperature, top_p, max_tokens, stop, seed, n, logprobs and the penalties)."""

from __future__ import annotations

from google.genai import types

from standby.protocol import ChatRequest, Message
from standby.providers.gemini_wire import request_body


def test_sampling_fields_become_gemini_generation_config() -> None:
    request = ChatRequest(
        messages=(Message("user", "hi"),),
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop=("END", "STOP"),
        seed=7,
        n=2,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    sent = request_body(request)["generationConfig"]
    config = types.GenerationConfig.model_validate(sent)
    assert (config.temperature, config.top_p, config.max_output_tokens) == (0.3, 0.9, 50)
    assert config.stop_sequences == ["END", "STOP"] and config.seed == 7
    assert (config.candidate_count, config.response_logprobs, config.logprobs) == (2, True, 3)
    assert (config.presence_penalty, config.frequency_penalty) == (0.5, 0.25)
    assert set(sent) == {
        "temperature",
        "topP",
        "maxOutputTokens",
        "stopSequences",
        "seed",
        "candidateCount",
        "responseLogprobs",
        "logprobs",
        "presencePenalty",
        "frequencyPenalty",
    }


def test_unset_fields_are_not_sent() -> None:
    sent = request_body(ChatRequest(messages=(Message("user", "hi"),)))["generationConfig"]
    assert sent == {"candidateCount": 1}
