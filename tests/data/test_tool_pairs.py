"""Tool pairs in the pair store and its exports: a schema-1 file is migrated (its pairs, ids and
hashes unchanged), and an export with a tool pair has TRL's tool-calling columns that read back
through ``load_split`` as the protocol's messages and tools."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from standby.data.export import FEATURES, export
from standby.data.merge import MergeConfig, run_merge
from standby.data.pairs import DataError, PairStore
from standby.data.sources import load_split
from standby.data.tool_pairs import messages_of, tools_of
from tests.data import Stores, candidate

CALL = {
    "id": "c1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}
TOOLS = (
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
)
TURNS: tuple[dict[str, Any], ...] = (
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "get_weather"},
    {"role": "assistant", "content": "It is sunny."},
)
V1_PAIRS = """
CREATE TABLE pairs (
    prompt_id TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL, messages TEXT NOT NULL,
    category TEXT NOT NULL, source TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL,
    model_version TEXT, event_id TEXT NOT NULL, request_id TEXT NOT NULL,
    created_at TEXT NOT NULL, split TEXT NOT NULL CHECK (split IN ('train_sft', 'test_sft')),
    content_hash TEXT NOT NULL, first_seq INTEGER NOT NULL, seq INTEGER NOT NULL);
PRAGMA user_version = 1;
"""


def tool_candidate(i: int) -> Any:
    return candidate(
        i, prompt="Weather in Paris?", response="It is sunny.", turns=TURNS, tools=TOOLS
    )


def test_a_schema_1_store_is_migrated_and_keeps_its_pairs(stores: Stores, tmp_path: Path) -> None:
    before = stores.open()
    before.write([candidate(1), candidate(2)])
    old = {p.prompt_id: p for p in before.pairs()}
    before.close()
    path = before.path
    with sqlite3.connect(path) as db:  # the same pairs as standby 1 wrote them: no tools column
        rows = db.execute("SELECT * FROM pairs").fetchall()
        db.execute("DROP TABLE pairs")
        db.executescript(V1_PAIRS)
        db.executemany(f"INSERT INTO pairs VALUES ({', '.join('?' * 15)})", [r[:15] for r in rows])
    store = PairStore(path)
    try:
        assert {p.prompt_id: p for p in store.pairs()} == old
        store.write([tool_candidate(3)])
        assert {p.request_id: p.tools for p in store.pairs()} == {
            "r1": None,
            "r2": None,
            "r3": list(TOOLS),
        }
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    PairStore(path).close()  # opening a migrated store again changes nothing
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(DataError, match="written by a newer standby"):
        PairStore(path)


def test_an_export_with_tool_pairs_has_the_tool_columns(stores: Stores, tmp_path: Path) -> None:
    plain = stores.open("plain.db")
    plain.write([candidate(1)])
    export(plain, "jsonl", tmp_path / "plain", split="all")
    row = orjson.loads((tmp_path / "plain" / "train_sft.jsonl").read_bytes().splitlines()[0])
    assert set(row) == set(FEATURES)  # no tool column without a tool pair

    store = stores.open("tools.db")
    store.write([candidate(1), tool_candidate(2)])
    for fmt in ("jsonl", "hf"):
        export(store, fmt, tmp_path / fmt, split="all")  # type: ignore[arg-type]
        rows = [
            r
            for split in ("train_sft", "test_sft")
            for r in load_split(str(tmp_path / fmt), split).dataset
        ]
        by_prompt = {r["prompt"]: r for r in rows}
        tool_row = by_prompt["Weather in Paris?"]
        assert tools_of(tool_row["tools"])[0].name == "get_weather"
        messages = messages_of(tool_row["messages"])
        assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[1].tool_calls[0].arguments == '{"city":"Paris"}'
        assert messages[2].name == "get_weather"
        assert by_prompt["question 1"]["tools"] is None
        assert tools_of(by_prompt["question 1"]["tools"]) == ()


def test_a_merge_keeps_the_calls_of_tool_pairs(stores: Stores, tmp_path: Path) -> None:
    store = stores.open("tools.db", test_fraction=0.0)
    store.write([candidate(1), tool_candidate(2)])
    other = tmp_path / "other"
    other.mkdir()
    (other / "train_sft.jsonl").write_bytes(
        orjson.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )
        + b"\n"
    )
    (other / "test_sft.jsonl").write_bytes(b"")
    url = f"sqlite:///{store.path}"
    run_merge(MergeConfig(first_ds_id=url, second_ds_id=str(other), output_dir=tmp_path / "merged"))
    rows = load_split(str(tmp_path / "merged"), "train_sft").dataset
    tool_row = next(r for r in rows if r["tools"])
    assert [m.role for m in messages_of(tool_row["messages"])] == [m["role"] for m in TURNS]
    assert messages_of(tool_row["messages"])[1].tool_calls[0].name == "get_weather"
