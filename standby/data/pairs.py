"""The pair store: one SQLite file (WAL) with one row per training pair, keyed by ``prompt_id``.

- ``prompt_id`` is the SHA-256 of the normalised prompt (lower-case, whitespace collapsed and
  stripped); a system message, when present, is part of it, since the answer depends on it.
- Dedup keeps the NEWEST answer per prompt_id, newest by event time (then event id), so a late
  redelivery of an older event never overwrites a newer answer.
- ``split`` (train_sft / test_sft) is a hash of prompt_id against ``test_fraction``, set when a
  prompt is first stored and never changed: a pair cannot move between train and test.
- Length filters reject candidates (counted by reason, like the materializer's skips).
- A tool-using pair (``data/tool_pairs.py``) keeps its whole agent-loop turn in ``messages``
  and the functions offered in ``tools``; its prompt id adds the tools and the history to the
  question's, and the length filter measures an answer made of calls by its calls.
- Schema 2 added the ``tools`` column (NULL for plain-text pairs); a schema-1 file is migrated
  when opened, its pairs, ids and hashes unchanged.
- ``snapshot()`` records the counts and one content hash over every pair's content hash;
  ``seq`` (per write transaction) tells what is new or changed since the last snapshot.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import orjson

from standby.config import DataConfig
from standby.data.tool_pairs import Turn, answer_chars, tool_prompt_id
from standby.errors import ConfigError, StandbyError
from standby.store import new_event_id, sqlite
from standby.store.urls import sqlite_file

SPLITS = ("train_sft", "test_sft")
SOURCE = "captured"
_COLUMNS = (
    "prompt_id, prompt, messages, category, source, route, model, model_version, event_id,"
    " request_id, created_at, split, content_hash, tools"
)
SCHEMA_VERSION = 2
_FIELDS = tuple(name.strip() for name in _COLUMNS.split(","))  # Pair's, in order
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    prompt_id TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL, messages TEXT NOT NULL,
    category TEXT NOT NULL, source TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL,
    model_version TEXT, event_id TEXT NOT NULL, request_id TEXT NOT NULL,
    created_at TEXT NOT NULL, split TEXT NOT NULL CHECK (split IN ('train_sft', 'test_sft')),
    content_hash TEXT NOT NULL, first_seq INTEGER NOT NULL, seq INTEGER NOT NULL,
    tools TEXT);
CREATE INDEX IF NOT EXISTS pairs_by_seq ON pairs (seq);
CREATE INDEX IF NOT EXISTS pairs_by_split ON pairs (split, created_at);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, seq INTEGER NOT NULL,
    content_hash TEXT NOT NULL, counts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
PRAGMA user_version = 2;
"""
_MIGRATIONS = {1: "ALTER TABLE pairs ADD COLUMN tools TEXT; PRAGMA user_version = 2;"}


class DataError(StandbyError):
    """The pair store or an export cannot be used; the message is one line."""


def normalise(text: str) -> str:
    """Lower-case, every run of whitespace as one space, stripped."""
    return " ".join(text.lower().split())


def prompt_id_of(prompt: str, system: Sequence[str] = ()) -> str:
    """Stable id of a prompt: hex SHA-256 of the normalised system message(s) and prompt."""
    key = "\n".join([*(normalise(s) for s in system), normalise(prompt)])
    return hashlib.sha256(key.encode()).hexdigest()


def split_of(prompt_id: str, test_fraction: float) -> str:
    """``test_sft`` for about ``test_fraction`` of prompt ids, by hash: same id, same split."""
    digest = hashlib.sha256(f"standby-split:{prompt_id}".encode()).digest()
    return "test_sft" if int.from_bytes(digest[:8], "big") < test_fraction * 2**64 else "train_sft"


def timestamp(t: datetime) -> str:
    """Fixed-width ISO-8601 in UTC, so that text order is time order."""
    aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pair before the store assigns its split: one prompt and the primary's answer to it."""

    prompt: str
    response: str
    system: tuple[str, ...]
    route: str
    model: str
    model_version: str | None
    event_id: str
    request_id: str
    created_at: str
    source: str = SOURCE
    turns: tuple[Turn, ...] = ()  # a tool pair's messages, ending on the answer
    tools: tuple[Turn, ...] = ()  # the functions a tool pair's request offered

    @property
    def prompt_id(self) -> str:
        base = prompt_id_of(self.prompt, self.system)
        return tool_prompt_id(base, self.turns[:-1], self.tools) if self.turns else base

    def answer_chars(self) -> int:
        return answer_chars(self.turns[-1]) if self.turns else len(self.response)

    def messages(self) -> list[Turn]:
        """no_robots style: system message(s) first, then the user prompt, then the answer
        (a tool pair: its turns, calls and results included)."""
        if self.turns:
            return list(self.turns)
        return [
            *({"role": "system", "content": s} for s in self.system),
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.response},
        ]


@dataclass(frozen=True, slots=True)
class Pair:
    """One stored training pair, in the no_robots schema plus provenance."""

    prompt_id: str
    prompt: str
    messages: list[Turn]
    category: str
    source: str
    route: str
    model: str
    model_version: str | None
    event_id: str
    request_id: str
    created_at: str
    split: str
    content_hash: str
    tools: list[Turn] | None = None  # a tool pair's functions (OpenAI's shape); else None


def content_hash_of(
    prompt_id: str,
    messages: list[Turn],
    category: str,
    split: str,
    tools: Sequence[Turn] = (),
) -> str:
    """What the snapshot hash is made of: a pair's text, category and split (not provenance),
    and a tool pair's tools (a plain pair's hash is what it was before tools)."""
    body: dict[str, Any] = {
        "prompt_id": prompt_id,
        "messages": messages,
        "category": category,
        "split": split,
    }
    if tools:
        body["tools"] = list(tools)
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class WriteResult:
    """What one ``write`` did: new pairs, duplicates (of which ``replaced`` took the newer
    answer), events already stored (redeliveries) and rejections by reason."""

    written: int = 0
    duplicate: int = 0
    replaced: int = 0
    redelivered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    created_at: str
    seq: int
    content_hash: str
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.id,
            "created_at": self.created_at,
            "seq": self.seq,
            "content_hash": self.content_hash,
            "counts": self.counts,
        }


@dataclass(frozen=True, slots=True)
class Stats:
    total: int
    by_split: dict[str, int]
    rows: list[tuple[str, str, str, int]]  # (route, source, split, count)
    new_since_snapshot: int
    updated_since_snapshot: int
    last_snapshot: Snapshot | None
    counters: dict[str, int]

    @classmethod
    def empty(cls) -> Stats:
        """What a store that does not exist yet holds."""
        return cls(0, dict.fromkeys(SPLITS, 0), [], 0, 0, None, {})

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_split": self.by_split,
            "by_route_source_split": [
                {"route": r, "source": s, "split": sp, "count": n} for r, s, sp, n in self.rows
            ],
            "new_since_snapshot": self.new_since_snapshot,
            "updated_since_snapshot": self.updated_since_snapshot,
            "last_snapshot": self.last_snapshot.to_json() if self.last_snapshot else None,
            "counters": self.counters,
        }


def store_path(url: str) -> Path:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` store URL."""
    path, query = sqlite_file(url, "data.store")
    if query:
        raise ConfigError(f"data.store {url!r}: the pair store takes no options (?{query})")
    return Path(path)


class PairStore:
    """Training pairs in one SQLite file; several processes may open it (WAL, busy timeout)."""

    def __init__(
        self,
        path: str | Path,
        *,
        config: DataConfig | None = None,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.config = config or DataConfig()
        self._lock = threading.Lock()
        try:
            with self._errors():
                self._db = sqlite.connect(self.path, busy_timeout_s=busy_timeout_s)
        except OSError as e:
            raise DataError(f"pair store {self.path}: cannot open: {e}") from None
        try:
            with self._errors():
                self._migrate()
                self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Bring an older file to SCHEMA_VERSION, under the write lock (two processes opening
        it at once migrate it once); a current file takes no lock."""
        if sqlite.schema_version(self._db) == SCHEMA_VERSION:
            return
        with sqlite.transaction(self._db) as db:
            version = sqlite.schema_version(db)
            if version > SCHEMA_VERSION:
                raise DataError(f"pair store {self.path}: written by a newer standby")
            if version and version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)

    @classmethod
    def from_config(cls, config: DataConfig) -> PairStore:
        return cls(store_path(config.store), config=config)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            name = getattr(e, "sqlite_errorname", type(e).__name__)
            raise DataError(f"pair store {self.path}: {e} ({name})") from None

    @contextmanager
    def transaction(
        self, mode: Literal["DEFERRED", "IMMEDIATE"] = "IMMEDIATE"
    ) -> Iterator[sqlite3.Connection]:
        """One transaction on the store's connection; ``DEFERRED`` reads see one consistent
        state (WAL) however long they take, while writers go on."""
        with self._lock, self._errors(), sqlite.transaction(self._db, mode) as db:
            yield db

    # -- writing -------------------------------------------------------------------------------

    def reject_reason(self, c: Candidate) -> str | None:
        cfg = self.config
        for what, n, low, high in (
            ("prompt", len(c.prompt), cfg.min_prompt_chars, cfg.max_prompt_chars),
            ("response", c.answer_chars(), cfg.min_response_chars, cfg.max_response_chars),
        ):
            if n < low:
                return f"{what}_too_short"
            if n > high:
                return f"{what}_too_long"
        return None

    def write(
        self, candidates: Iterable[Candidate], *, skipped: Mapping[str, int] | None = None
    ) -> WriteResult:
        """Filter and upsert ``candidates`` and add ``skipped`` to the counters, in one
        transaction: either all of it is stored or none."""
        result = WriteResult()
        with self.transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM pairs").fetchone()[0]
            for c in candidates:
                reason = self.reject_reason(c)
                if reason is not None:
                    result.rejected[reason] += 1
                else:
                    self._upsert(db, c, seq, result)
            counts: Counter[str] = Counter({f"skipped.{k}": v for k, v in (skipped or {}).items()})
            counts.update({f"rejected.{k}": v for k, v in result.rejected.items()})
            counts.update(
                written=result.written,
                duplicate=result.duplicate,
                replaced=result.replaced,
                redelivered=result.redelivered,
            )
            db.executemany(
                "INSERT INTO counters VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                [(k, v) for k, v in counts.items() if v],
            )
        return result

    def _upsert(self, db: sqlite3.Connection, c: Candidate, seq: int, out: WriteResult) -> None:
        pid, messages = c.prompt_id, c.messages()
        category = c.route or SOURCE
        old = db.execute(
            "SELECT split, created_at, event_id FROM pairs WHERE prompt_id = ?", (pid,)
        ).fetchone()
        if old is not None and old[2] == c.event_id:
            out.redelivered += 1
            return
        split = old[0] if old else split_of(pid, self.config.test_fraction)
        row = (
            pid,
            c.prompt,
            orjson.dumps(messages).decode(),
            category,
            c.source,
            c.route,
            c.model,
            c.model_version,
            c.event_id,
            c.request_id,
            c.created_at,
            split,
            content_hash_of(pid, messages, category, split, c.tools),
            orjson.dumps(list(c.tools)).decode() if c.turns else None,
            seq,
            seq,
        )
        if old is None:
            db.execute(f"INSERT INTO pairs ({_COLUMNS}, first_seq, seq) VALUES ({_marks(16)})", row)
            out.written += 1
            return
        out.duplicate += 1
        if (c.created_at, c.event_id) > (old[1], old[2]):
            db.execute(
                "UPDATE pairs SET prompt = ?, messages = ?, category = ?, source = ?, route = ?,"
                " model = ?, model_version = ?, event_id = ?, request_id = ?, created_at = ?,"
                " content_hash = ?, tools = ?, seq = ? WHERE prompt_id = ?",
                (*row[1:11], row[12], row[13], seq, pid),
            )
            out.replaced += 1

    # -- reading -------------------------------------------------------------------------------

    def get(self, prompt_id: str) -> Pair | None:
        with self.transaction("DEFERRED") as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM pairs WHERE prompt_id = ?", (prompt_id,))
            found = row.fetchone()
        return _pair(found) if found else None

    def iter_pairs(self, db: sqlite3.Connection, splits: Sequence[str] = SPLITS) -> Iterator[Pair]:
        """Pairs of ``splits`` by split, then time; call inside ``transaction("DEFERRED")``."""
        cursor = db.execute(
            f"SELECT {_COLUMNS} FROM pairs WHERE split IN ({_marks(len(splits))})"
            " ORDER BY split DESC, created_at, prompt_id",
            tuple(splits),
        )
        while rows := cursor.fetchmany(1000):
            yield from (_pair(r) for r in rows)

    def pairs(self, splits: Sequence[str] = SPLITS) -> list[Pair]:
        with self.transaction("DEFERRED") as db:
            return list(self.iter_pairs(db, splits))

    def content_hash(self, db: sqlite3.Connection, splits: Sequence[str] = SPLITS) -> str:
        """SHA-256 over the sorted content hashes of the pairs of ``splits``."""
        h = hashlib.sha256()
        cursor = db.execute(
            f"SELECT content_hash FROM pairs WHERE split IN ({_marks(len(splits))})"
            " ORDER BY content_hash",
            tuple(splits),
        )
        while rows := cursor.fetchmany(5000):
            h.update(b"".join(r[0].encode() + b"\n" for r in rows))
        return h.hexdigest()

    def counts(self, db: sqlite3.Connection) -> dict[str, int]:
        by_split = dict.fromkeys(SPLITS, 0)
        by_split.update(db.execute("SELECT split, COUNT(*) FROM pairs GROUP BY split").fetchall())
        return {"total": sum(by_split.values()), **by_split}

    def stats(self) -> Stats:
        with self.transaction("DEFERRED") as db:
            last = _last_snapshot(db)
            new, updated = _changed_since(db, last.seq if last else 0)
            rows = db.execute(
                "SELECT route, source, split, COUNT(*) FROM pairs GROUP BY route, source, split"
                " ORDER BY route, source, split DESC"
            ).fetchall()
            counts = self.counts(db)
            counters = dict(db.execute("SELECT name, value FROM counters ORDER BY name"))
        by_split = {s: counts[s] for s in SPLITS}
        return Stats(counts["total"], by_split, rows, new, updated, last, counters)

    # -- retention -----------------------------------------------------------------------------

    def purge(
        self, *, before: datetime | None = None, event_ids: Collection[str] | None = None
    ) -> int:
        """Delete captured pairs (``source`` = captured) made before ``before`` and/or made
        from one of ``event_ids`` (both given: both must hold); return how many."""
        where, args = ["source = ?"], [SOURCE]  # fixed clauses; values are bound
        if before is not None:
            where.append("created_at < ?")
            args.append(timestamp(before))
        with self.transaction() as db:
            if event_ids is None:
                return db.execute(f"DELETE FROM pairs WHERE {' AND '.join(where)}", args).rowcount
            ids = list(event_ids)
            deleted = 0
            for n in range(0, len(ids), 500):
                chunk = ids[n : n + 500]
                marks = _marks(len(chunk))
                sql = f"DELETE FROM pairs WHERE {' AND '.join(where)} AND event_id IN ({marks})"
                deleted += db.execute(sql, [*args, *chunk]).rowcount
            return deleted

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Record what the store holds now: counts, content hash, and the write position that
        later "new since last snapshot" counts start from."""
        with self.transaction() as db:  # IMMEDIATE: no write lands between count and hash
            last = _last_snapshot(db)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM pairs").fetchone()[0]
            counts = self.counts(db)
            counts["new"], counts["updated"] = _changed_since(db, last.seq if last else 0)
            snap = Snapshot(
                new_event_id(), timestamp(datetime.now(UTC)), seq, self.content_hash(db), counts
            )
            db.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)",
                (snap.id, snap.created_at, seq, snap.content_hash, orjson.dumps(counts).decode()),
            )
        return snap

    def last_snapshot(self) -> Snapshot | None:
        with self.transaction("DEFERRED") as db:
            return _last_snapshot(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _pair(row: Sequence[Any]) -> Pair:
    fields = dict(zip(_FIELDS, row, strict=True))
    fields["messages"] = orjson.loads(fields["messages"])
    fields["tools"] = orjson.loads(fields["tools"]) if fields["tools"] else None
    return Pair(**fields)


def _changed_since(db: sqlite3.Connection, seq: int) -> tuple[int, int]:
    """(prompts first stored after write ``seq``, older prompts whose answer changed since)."""
    new, updated = db.execute(
        "SELECT COUNT(*) FILTER (WHERE first_seq > ?1),"
        " COUNT(*) FILTER (WHERE first_seq <= ?1 AND seq > ?1) FROM pairs",
        (seq,),
    ).fetchone()
    return int(new), int(updated)


def _last_snapshot(db: sqlite3.Connection) -> Snapshot | None:
    row = db.execute(
        "SELECT id, created_at, seq, content_hash, counts FROM snapshots"
        " ORDER BY seq DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    snap_id, created_at, seq, content_hash, counts = row
    return Snapshot(snap_id, created_at, seq, content_hash, orjson.loads(counts))
