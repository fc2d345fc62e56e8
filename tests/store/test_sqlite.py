"""The one SQLite set-up: WAL, synchronous=NORMAL, a busy timeout, the directory created, and
transactions that commit or roll back as a whole."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from standby.store import sqlite


def test_a_new_file_is_wal_with_a_busy_timeout_in_a_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.db"
    conn = sqlite.connect(path, busy_timeout_s=2.5)
    try:
        assert path.parent.is_dir()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.isolation_level is None  # autocommit: transactions are explicit
        assert sqlite.schema_version(conn) == 0
    finally:
        conn.close()
    # WAL is a property of the file: another connection sees it.
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_connection_may_be_used_from_another_thread(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "x.db")
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(conn.execute("SELECT 1").fetchone()[0]))
    worker.start()
    worker.join()
    conn.close()
    assert seen == [1]


def test_max_bytes_caps_the_file(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "x.db", max_bytes=64 * 1024)
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        assert conn.execute("PRAGMA max_page_count").fetchone()[0] == 64 * 1024 // page
        conn.execute("CREATE TABLE t (b BLOB)")
        with pytest.raises(sqlite3.OperationalError) as err:
            conn.execute("INSERT INTO t VALUES (zeroblob(1000000))")
        assert err.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL
    finally:
        conn.close()


def test_a_directory_that_cannot_be_made_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError):
        sqlite.connect(tmp_path / "file" / "x.db")


def test_a_transaction_commits_or_rolls_back_as_a_whole(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (n INTEGER)")
    with sqlite.transaction(conn) as db:
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ValueError, match="no"), sqlite.transaction(conn) as db:
        db.execute("INSERT INTO t VALUES (2)")
        raise ValueError("no")
    assert not conn.in_transaction
    with sqlite.transaction(conn, "DEFERRED") as db:
        assert db.execute("SELECT n FROM t").fetchall() == [(1,)]
    conn.close()


def test_a_writer_waits_for_another_writers_lock(tmp_path: Path) -> None:
    first = sqlite.connect(tmp_path / "x.db")
    second = sqlite.connect(tmp_path / "x.db", busy_timeout_s=5.0)
    first.execute("CREATE TABLE t (n INTEGER)")
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO t VALUES (1)")
    released = threading.Timer(0.2, lambda: first.execute("COMMIT"))
    released.start()
    with sqlite.transaction(second) as db:  # waits the 0.2 s instead of failing with BUSY
        db.execute("INSERT INTO t VALUES (2)")
    released.join()
    assert second.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    first.close()
    second.close()
