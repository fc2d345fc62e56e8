"""Usage details from OpenAI-style servers: ``completion_tokens_details.reasoning_tokens`` and
``prompt_tokens_details.cached_tokens`` read from bodies built with the openai SDK's own types,
and written back in OpenAI's shape."""

from __future__ import annotations

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails

from standby.protocol import Usage
from standby.providers.openai_compat import parse_completion


def _usage(details: bool) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=120,
        completion_tokens=50,
        total_tokens=170,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=30) if details else None,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=100) if details else None,
    )


def test_details_are_read_and_written_back() -> None:
    usage = Usage.from_openai(_usage(True).model_dump())
    assert (usage.reasoning_tokens, usage.cached_tokens) == (30, 100)
    assert CompletionUsage.model_validate(usage.as_dict()) == _usage(True)
    plain = Usage.from_openai(_usage(False).model_dump(exclude_none=True))
    assert (plain.reasoning_tokens, plain.cached_tokens) == (None, None)
    assert plain.as_dict() == {"prompt_tokens": 120, "completion_tokens": 50, "total_tokens": 170}


def test_an_openai_compatible_answer_keeps_its_details() -> None:
    body = ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(True).model_dump(),
        }
    )
    completion = parse_completion("vllm", body.model_dump(exclude_none=True))
    assert completion.usage.reasoning_tokens == 30
    assert completion.usage.cached_tokens == 100
