"""Tool pairs train with the chat format serving uses: the prompt is what the local backend
renders for the same request (tools declared, calls and results in the history), and the loss
is on the last answer only, its call tokens and the token a call stops on included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from standby.chat_format import render_prompt, template_tools, tool_chat
from standby.protocol import ChatRequest
from standby.trainer.config import TrainConfig
from standby.trainer.data import prepare_split
from standby.trainer.model import load_base, place
from standby.trainer.train import build_trainer
from tests.fixtures.tiny_model import ANSWER, ASK, CALL, FOLLOW_UP, RESULT
from tests.fixtures.tool_calls import PARIS, TOOLS
from tests.trainer.conftest import tiny_settings, write_jsonl

QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
CALLED = {"role": "assistant", "content": "", "tool_calls": [PARIS.openai()]}
ANSWERED = {"role": "tool", "content": RESULT, "tool_call_id": PARIS.id, "name": PARIS.name}


def tool_rows() -> list[dict[str, Any]]:
    """The pair store's export of a call, the answer after its result, and a plain pair."""
    return [
        {"prompt": QUESTION["content"], "messages": [QUESTION, CALLED], "tools": json.dumps(TOOLS)},
        {
            "prompt": QUESTION["content"],
            "messages": [QUESTION, CALLED, ANSWERED, {"role": "assistant", "content": ANSWER}],
            "tools": json.dumps(TOOLS),  # JSON text, as exports write it
        },
        {
            "prompt": "Hi?",
            "messages": [
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."},
            ],
            "tools": None,
        },
    ]


def test_tool_pairs_train_on_the_last_answer_as_served(
    tiny_gemma4_dir: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "data" / "train_sft.jsonl", tool_rows())
    prepared = prepare_split(str(data), "train_sft")
    assert prepared.tools and prepared.rows == 3
    cfg = TrainConfig.model_validate(
        tiny_settings(tiny_gemma4_dir, data, tmp_path / "out", max_length=2048)
    )
    placement = place(cfg)
    base = load_base(cfg, placement)
    trainer = build_trainer(cfg, placement, base.model, base.tokenizer, prepared.dataset, None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma4_dir)
    served: list[ChatRequest | None] = [ASK, FOLLOW_UP, None]
    answers = [CALL + "<|tool_response>", ANSWER + "<turn|>\n", "Hello.<turn|>\n"]
    for request, answer, example in zip(served, answers, trainer.train_dataset, strict=True):
        ids, labels = example["input_ids"], example["labels"]
        trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        assert trained == tokenizer.encode(answer, add_special_tokens=False)
        if request is not None:  # the context is what the local backend renders when serving
            prompt = render_prompt(
                tokenizer, tool_chat(request.messages), tools=template_tools(request)
            )
            assert ids[: len(prompt)] == prompt
            assert len(ids) == len(prompt) + len(trained)
