"""Rows in the no_robots schema -> the chats the trainer learns from.

Each row's ``messages`` become one conversation, formatted by ``standby.chat_format`` as the
gateway's local backend formats a request: system text folded into the first user turn
(``fold_system_messages``, since Gemma has no system role), then the model's own chat template
(applied by TRL, which also computes the assistant-token mask from the template's
``{% generation %}`` markers). A conversation keeps its turns up to its last assistant answer;
rows without a user message answered by an assistant are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from standby.chat_format import fold_system_messages
from standby.data.pairs import DataError
from standby.data.sources import Loaded, load_split, require_columns

log = logging.getLogger("standby.trainer")

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prepared:
    """The chats of one split, and where they came from."""

    dataset: Any  # datasets.Dataset with one column, ``messages``
    loaded: Loaded
    skipped: int

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
    chat = fold_system_messages(turns)
    while chat and chat[-1]["role"] != "assistant":
        chat.pop()
    if not chat or chat[0]["role"] != "user":
        return None
    expected = ("user", "assistant")
    if any(m["role"] != expected[i % 2] for i, m in enumerate(chat)):
        return None
    return chat


def prepare_split(source: str, split: str, *, revision: str | None = None) -> Prepared:
    """Load ``split`` of ``source`` and turn its rows into chats; DataError (one line) when the
    source, the split or the ``messages`` column is missing, or no row is usable."""
    import datasets  # type: ignore[import-untyped]

    where = f"{source} [{split}]"
    loaded = load_split(source, split, revision=revision)
    if loaded.rows == 0:  # before the columns: an empty file has none
        raise DataError(f"{where}: the split has no rows")
    require_columns(loaded.dataset, ("messages",), where)
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
