"""Rows in the no_robots schema -> the chats the trainer learns from.

Each row's ``messages`` become one conversation, formatted by ``standby.chat_format`` as the
gateway's local backend formats a request: system turns kept where the model's template takes
them and folded into the first user turn where it rejects them (``chat_format.as_served``, in
``served_rows`` once the tokenizer is known), then the model's own chat template
(applied by TRL, which also computes the assistant-token mask from the template's
``{% generation %}`` markers). A conversation keeps its turns up to its last assistant answer;
rows without a user message answered by an assistant are skipped and counted.

A split with tool pairs (a non-null ``tools`` column, ``data/tool_pairs.py``) is prepared in
TRL's conversational tool-calling shape: each tool row's turns as ``chat_format.tool_chat``
renders a request when served (calls' arguments as objects, ``tool`` turns with the function's
name, no system folding: the template is the one serving uses) and its ``tools`` as JSON text,
which TRL hands to the template. Plain rows of such a split are prepared as above. A split
without tool pairs is prepared exactly as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from standby.chat_format import ToolChat, as_served, fold_system_messages, tool_chat
from standby.data.pairs import DataError
from standby.data.sources import Loaded, load_split, require_columns
from standby.data.tool_pairs import messages_of, tools_of

log = logging.getLogger("standby.trainer")

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prepared:
    """The chats of one split, and where they came from."""

    dataset: Any  # datasets.Dataset: ``messages`` (and ``tools`` for a split with tool pairs)
    loaded: Loaded
    skipped: int
    tools: bool = False  # the split has tool pairs

    @property
    def rows(self) -> int:
        return int(self.dataset.num_rows)


def to_chat(messages: Any) -> list[dict[str, str]] | None:
    """One row's messages as a user/assistant conversation ending on an assistant answer, or
    None when the row has none (wrong shape, unknown role, no answered user turn, turns that
    do not alternate)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return None
    turns: list[dict[str, str]] = []
    for m in messages:
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            return None
        content = m.get("content")
        if not isinstance(content, str):
            return None
        turns.append({"role": str(m["role"]), "content": content})
    chat = fold_system_messages(turns)  # the shape checks; the system turns stay (as_served)
    while chat and chat[-1]["role"] != "assistant":
        chat.pop()
    if not chat or chat[0]["role"] != "user":
        return None
    expected = ("user", "assistant")
    if any(m["role"] != expected[i % 2] for i, m in enumerate(chat)):
        return None
    if len(chat) == len(turns):
        return chat
    return _up_to(turns, sum(m["role"] != "system" for m in chat))


def _up_to(turns: list[dict[str, str]], kept: int) -> list[dict[str, str]]:
    """``turns`` with their system turns, cut after the ``kept``-th other turn."""
    out: list[dict[str, str]] = []
    for m in turns:
        if m["role"] != "system" and kept == 0:
            break
        out.append(m)
        kept -= m["role"] != "system"
    while out and out[-1]["role"] == "system":
        out.pop()
    return out


def prepare_split(source: str, split: str, *, revision: str | None = None) -> Prepared:
    """Load ``split`` of ``source`` and turn its rows into chats; DataError (one line) when the
    source, the split or the ``messages`` column is missing, or no row is usable."""
    import datasets  # type: ignore[import-untyped]

    where = f"{source} [{split}]"
    loaded = load_split(source, split, revision=revision)
    if loaded.rows == 0:  # before the columns: an empty file has none
        raise DataError(f"{where}: the split has no rows")
    require_columns(loaded.dataset, ("messages",), where)
    if has_tool_rows(loaded.dataset):
        return _prepare_tool_split(loaded, where)
    chats = [to_chat(m) for m in loaded.dataset["messages"]]
    usable = [{"messages": c} for c in chats if c is not None]
    skipped = len(chats) - len(usable)
    if not usable:
        raise DataError(
            f"{where}: none of its {len(chats)} rows has a user message answered by an assistant"
        )
    if skipped:
        log.warning("%s: skipped %d of %d rows (no answered user turn)", where, skipped, len(chats))
    return Prepared(datasets.Dataset.from_list(usable), loaded, skipped)


def served_rows(dataset: Any, tokenizer: Any) -> Any:
    """Plain rows with their system turns as the server renders them for this model
    (``chat_format.as_served``: kept where the template takes them, else folded)."""
    if dataset is None or dataset.column_names != ["messages"]:
        return dataset
    import datasets

    rows = [{"messages": as_served(tokenizer, m)} for m in dataset["messages"]]
    return datasets.Dataset.from_list(rows)


def has_tool_rows(dataset: Any) -> bool:
    """True when a row of ``dataset`` has tools (a non-null ``tools`` column)."""
    return "tools" in dataset.column_names and any(t for t in dataset["tools"])


def to_tool_chat(messages: Any) -> ToolChat | None:
    """A tool row's turns as the template renders them when served, cut after the last
    assistant answer; None when the row has no user turn answered by an assistant, or a call
    whose arguments are not a JSON object."""
    try:
        chat = tool_chat(messages_of(messages))
    except (KeyError, TypeError, ValueError):
        return None
    while chat and chat[-1]["role"] != "assistant":
        chat.pop()
    if not any(m["role"] == "user" for m in chat):
        return None
    return chat


def _tool_row(messages: Any, tools: Any) -> dict[str, Any] | None:
    if not tools:
        chat: ToolChat | None = to_chat(messages)
        return None if chat is None else {"messages": chat, "tools": None}
    chat = to_tool_chat(messages)
    declared = json.dumps([t.openai() for t in tools_of(tools)])
    return None if chat is None else {"messages": chat, "tools": declared}


def _prepare_tool_split(loaded: Loaded, where: str) -> Prepared:
    import datasets

    ds = loaded.dataset
    rows = [_tool_row(m, t) for m, t in zip(ds["messages"], ds["tools"], strict=True)]
    usable = [r for r in rows if r is not None]
    if not usable:
        raise DataError(f"{where}: none of its {len(rows)} rows has an answered user turn")
    if skipped := len(rows) - len(usable):
        log.warning("%s: skipped %d of %d rows (no answered user turn)", where, skipped, len(rows))
    dataset = datasets.Dataset.from_list(usable, features=TOOL_CHAT_FEATURES)
    return Prepared(dataset, loaded, skipped, tools=True)


def _tool_chat_features() -> Any:
    import datasets

    text = datasets.Value("string")
    call = {"id": text, "type": text, "function": {"name": text, "arguments": datasets.Json()}}
    message = {
        "role": text,
        "content": text,
        "tool_calls": datasets.List(call),
        "tool_call_id": text,
        "name": text,
    }
    # Arguments as Json: every call keeps its own keys (a struct would add the others as null).
    return datasets.Features({"messages": datasets.List(message), "tools": text})


TOOL_CHAT_FEATURES = _tool_chat_features()
