"""Test rows in the no_robots schema, written where batch inference reads them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

TOPICS = ("the sky", "a river", "bread", "a train", "winter", "a garden", "music", "a bridge")


def no_robots_rows(n: int) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "prompt": f"Write one sentence about {topic} ({i}).",
                "prompt_id": f"p{i:04d}",
                "messages": [
                    {"role": "user", "content": f"Write one sentence about {topic} ({i})."},
                    {"role": "assistant", "content": f"Here is a sentence about {topic}."},
                ],
                "category": "Generation",
            }
        )
    return rows


def write_split(folder: Path, split: str, rows: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return folder


@pytest.fixture
def test_data(tmp_path: Path) -> Path:
    """A folder with ``test_sft.jsonl``: 6 rows."""
    return write_split(tmp_path / "data", "test_sft", no_robots_rows(6))
