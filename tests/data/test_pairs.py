"""The pair store on a real SQLite file: prompt ids, dedup keeping the newest answer, stable
splits across store instances, length filters, snapshots and what is new since one."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from standby.config import DataConfig
from standby.data.pairs import (
    Candidate,
    DataError,
    PairStore,
    normalise,
    prompt_id_of,
    split_of,
    store_path,
    timestamp,
)
from standby.errors import ConfigError
from tests.data import Stores

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def candidate(
    n: int | str, *, response: str = "an answer", age_s: float = 0, **kw: Any
) -> Candidate:
    fields: dict[str, Any] = {
        "prompt": f"question {n}",
        "response": response,
        "system": (),
        "route": "gemini-2.5-flash",
        "model": "gemini-2.5-flash",
        "model_version": "gemini-2.5-flash-001",
        "event_id": f"e-{n}-{age_s}-{response}",
        "request_id": f"r{n}",
        "created_at": timestamp(T0 - timedelta(seconds=age_s)),
    }
    fields.update(kw)
    return Candidate(**fields)


def test_prompt_id_is_the_hash_of_the_normalised_prompt() -> None:
    assert normalise("  What IS\tthe\n\nanswer?  ") == "what is the answer?"
    assert prompt_id_of("What is  the answer?") == prompt_id_of(" what is the ANSWER? ")
    assert prompt_id_of("a") != prompt_id_of("b")
    assert len(prompt_id_of("a")) == 64
    # The answer depends on the system message, so it is part of the key.
    assert prompt_id_of("a", ["Answer in French."]) != prompt_id_of("a")
    assert prompt_id_of("a", ["Answer in  French."]) == prompt_id_of("a", ["answer in french."])


def test_a_pair_is_stored_in_the_no_robots_schema(store: PairStore) -> None:
    c = candidate(1, system=("Be brief.",))
    assert store.write([c]).written == 1
    pair = store.get(c.prompt_id)
    assert pair is not None
    assert pair.prompt == "question 1" and pair.category == "gemini-2.5-flash"
    assert pair.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": "an answer"},
    ]
    assert (pair.source, pair.route, pair.model_version) == ("captured", c.route, c.model_version)
    assert (pair.event_id, pair.request_id, pair.created_at) == (c.event_id, "r1", c.created_at)
    assert pair.split in ("train_sft", "test_sft") and len(pair.content_hash) == 64


def test_dedup_keeps_the_newest_answer_whatever_the_arrival_order(
    store: PairStore, stores: Stores
) -> None:
    old, new = candidate(1, response="old", age_s=60), candidate(1, response="new")
    store.write([new])
    late = store.write([old])  # an older event arriving late (a redelivery) loses
    assert (late.written, late.duplicate, late.replaced) == (0, 1, 0)
    assert store.get(new.prompt_id).messages[-1]["content"] == "new"  # type: ignore[union-attr]

    other = stores.open("other.db")
    other.write([old])
    newer = other.write([new])
    assert (newer.duplicate, newer.replaced) == (1, 1)
    assert other.get(new.prompt_id).messages[-1]["content"] == "new"  # type: ignore[union-attr]
    # Whitespace and case do not make a new prompt.
    assert other.write(
        [candidate(1, prompt="  QUESTION   1 ", response="newest", age_s=-5)]
    ).replaced
    assert len(other.pairs()) == 1


def test_the_same_event_twice_is_a_redelivery_not_a_duplicate(store: PairStore) -> None:
    c = candidate(1)
    store.write([c])
    again = store.write([c])
    assert (again.written, again.duplicate, again.redelivered) == (0, 0, 1)
    assert store.stats().counters == {"written": 1, "redelivered": 1}


def test_the_split_is_a_stable_hash_of_the_prompt_id(stores: Stores) -> None:
    ids = [prompt_id_of(f"prompt {i}") for i in range(4000)]
    held_out = sum(split_of(i, 0.1) == "test_sft" for i in ids)
    assert 320 < held_out < 480  # ~10%
    assert all(split_of(i, 0.0) == "train_sft" for i in ids)

    candidates = [candidate(i) for i in range(300)]
    first = stores.open("a.db", test_fraction=0.2)
    first.write(candidates)
    second = stores.open("b.db", test_fraction=0.2)
    second.write(reversed(candidates))  # another store, another order: the same splits
    splits = {p.prompt_id: p.split for p in first.pairs()}
    assert splits == {p.prompt_id: p.split for p in second.pairs()}
    assert 0 < list(splits.values()).count("test_sft") < 300


def test_a_pair_never_moves_between_splits(tmp_path: Path) -> None:
    path = tmp_path / "pairs.db"
    with PairStore(path, config=DataConfig(test_fraction=0.5)) as store:
        store.write([candidate(i, age_s=60) for i in range(50)])
        before = {p.prompt_id: p.split for p in store.pairs()}
    assert "test_sft" in before.values()
    # Reopened with another fraction (everything would now be train), newer answers come in.
    with PairStore(path, config=DataConfig(test_fraction=0.0)) as store:
        assert store.write([candidate(i, response="newer") for i in range(50)]).replaced == 50
        after = {p.prompt_id: p.split for p in store.pairs()}
        assert after == before
        assert store.write([candidate("fresh")]).written == 1
        assert store.get(candidate("fresh").prompt_id).split == "train_sft"  # type: ignore[union-attr]


def test_length_filters_reject_and_count(stores: Stores) -> None:
    store = stores.open(
        min_prompt_chars=5, max_prompt_chars=20, min_response_chars=3, max_response_chars=10
    )
    result = store.write(
        [
            candidate(1),
            candidate(2, prompt="hi"),
            candidate(3, prompt="x" * 21),
            candidate(4, response="ok"),
            candidate(5, response="y" * 11),
        ],
        skipped={"fallback": 2},
    )
    assert result.written == 1
    assert result.rejected == {
        "prompt_too_short": 1,
        "prompt_too_long": 1,
        "response_too_short": 1,
        "response_too_long": 1,
    }
    assert store.stats().counters == {
        "written": 1,
        "skipped.fallback": 2,
        "rejected.prompt_too_short": 1,
        "rejected.prompt_too_long": 1,
        "rejected.response_too_short": 1,
        "rejected.response_too_long": 1,
    }


def test_snapshots_hash_the_content_and_count_what_is_new(stores: Stores) -> None:
    store = stores.open()
    store.write([candidate(i) for i in range(10)])
    stats = store.stats()
    assert (stats.total, stats.new_since_snapshot, stats.last_snapshot) == (10, 10, None)
    first = store.snapshot()
    assert first.counts["total"] == 10 and first.counts["new"] == 10
    assert store.last_snapshot() == first
    assert store.stats().new_since_snapshot == 0

    store.write([candidate(i) for i in range(10, 13)])
    store.write([candidate(0, response="a better answer", age_s=-1)])
    stats = store.stats()
    assert (stats.new_since_snapshot, stats.updated_since_snapshot) == (3, 1)
    second = store.snapshot()
    assert (second.counts["new"], second.counts["updated"]) == (3, 1)
    assert second.content_hash != first.content_hash
    assert store.snapshot().content_hash == second.content_hash  # nothing changed
    assert store.stats().last_snapshot != first

    # The hash is over content only: the same pairs written in another order, elsewhere.
    twin = stores.open("twin.db")
    twin.write([candidate(0, response="a better answer", age_s=-1)])
    twin.write([candidate(i) for i in reversed(range(1, 13))])
    assert twin.snapshot().content_hash == second.content_hash


def test_stats_count_by_route_source_and_split(store: PairStore) -> None:
    store.write(
        [candidate(i) for i in range(20)] + [candidate(f"o{i}", route="other") for i in range(5)]
    )
    stats = store.stats()
    assert stats.total == 25 and sum(stats.by_split.values()) == 25
    by_route: dict[str, int] = {}
    for route, source, _, n in stats.rows:
        assert source == "captured"
        by_route[route] = by_route.get(route, 0) + n
    assert by_route == {"gemini-2.5-flash": 20, "other": 5}
    assert stats.to_json()["by_split"] == stats.by_split


def test_bad_store_urls_and_limits_fail_with_one_line(tmp_path: Path) -> None:
    assert store_path("sqlite:///./x/pairs.db") == Path("./x/pairs.db")
    assert store_path("sqlite:////abs/pairs.db") == Path("/abs/pairs.db")
    for url in ("postgres://db/pairs", "pairs.db", "sqlite:///"):
        with pytest.raises(ConfigError, match="expected sqlite:///"):
            store_path(url)
    with pytest.raises(ValidationError, match="min_prompt_chars"):
        DataConfig(min_prompt_chars=10, max_prompt_chars=5)
    with pytest.raises(ValidationError):
        DataConfig(test_fraction=1.0)
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match=r"junk\.db") as e:
        PairStore(not_a_db)
    assert "\n" not in str(e.value)


def test_the_file_is_wal_and_opens_from_another_connection(store: PairStore) -> None:
    store.write([candidate(1)])
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == 1
