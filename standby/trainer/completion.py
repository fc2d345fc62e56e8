"""Loss on the answer for chat templates that do not mark the assistant's tokens.

TRL computes an assistant-only loss from the template's ``{% generation %}`` markers. Templates
as published on the Hub mostly have none (Gemma 4's among them) and TRL ships training versions
for only a few. For those, each conversation becomes TRL's conversational prompt-completion
shape: the prompt is every turn before the last assistant answer, the completion that answer
(with its tool calls, if any); TRL renders both with the model's own template and trains on the
completion's tokens only. Earlier assistant turns of a multi-turn conversation are context
then, not targets.
"""

from __future__ import annotations

from typing import Any

from standby.chat_format import marks_assistant_tokens


def needs_completion_split(tokenizer: Any, assistant_only_loss: bool) -> bool:
    """True when the loss must stay on the answers but the template cannot say where they are."""
    return assistant_only_loss and not marks_assistant_tokens(tokenizer)


def last_answer_as_completion(row: dict[str, Any]) -> dict[str, Any]:
    """One ``messages`` row as ``prompt`` (the turns before the last one) and ``completion``
    (the last turn: the assistant's answer; rows are cut after it when they are prepared)."""
    messages = row["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def split_last_answer(dataset: Any) -> Any:
    """The dataset in prompt-completion shape (other columns, e.g. ``tools``, are kept)."""
    if dataset is None:
        return None
    return dataset.map(last_answer_as_completion, remove_columns=["messages"])
