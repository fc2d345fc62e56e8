"""Export the pair store in the no_robots schema (``prompt, prompt_id, messages, category``)
plus provenance (``source, route, model, model_version, event_id, created_at``):

- ``jsonl`` / ``parquet``: one file per split, ``OUTPUT/{split}.{ext}`` (or OUTPUT itself when
  it ends in ``.{ext}`` and one split is exported);
- ``hf``: a ``datasets.DatasetDict`` saved with ``save_to_disk`` (``load_from_disk`` reads it);
- ``push_to_hub``: a dataset repo laid out as ``datasets.push_to_hub`` does it
  (``data/{split}-00000-of-00001.parquet`` + a README card), through ``huggingface_hub``.

Rows are read in one read transaction (a consistent view while the materializer writes), by
split then time, and streamed to the files in batches. The content hash of what was exported
equals the snapshot hash when nothing changed since the snapshot.

When a pair of the exported splits uses tools, the export has TRL's conversational
tool-calling columns (``TOOL_FEATURES``): messages with ``tool_calls`` / ``tool_call_id`` /
``name`` and a ``tools`` column (the functions as OpenAI-shaped JSON text; null for a plain-text
pair). An export of plain-text pairs only has the columns it always had.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import datasets  # type: ignore[import-untyped]
import httpx2
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from standby.data.pairs import SPLITS, DataError, Pair, PairStore
from standby.errors import StandbyError

Format = Literal["jsonl", "parquet", "hf"]
FORMATS: tuple[Format, ...] = ("jsonl", "parquet", "hf")
COLUMNS = (
    "prompt",
    "prompt_id",
    "messages",
    "category",
    "source",
    "route",
    "model",
    "model_version",
    "event_id",
    "created_at",
)
_TEXT = datasets.Value("string")
FEATURES = datasets.Features(
    {
        "prompt": _TEXT,
        "prompt_id": _TEXT,
        "messages": datasets.List({"role": _TEXT, "content": _TEXT}),
        "category": _TEXT,
        **{name: _TEXT for name in COLUMNS[4:]},
    }
)
SCHEMA = FEATURES.arrow_schema
_CALL = {"id": _TEXT, "type": _TEXT, "function": {"name": _TEXT, "arguments": _TEXT}}
TOOL_FEATURES = datasets.Features(
    {
        **FEATURES,
        "messages": datasets.List(
            {
                "role": _TEXT,
                "content": _TEXT,
                "tool_calls": datasets.List(_CALL),
                "tool_call_id": _TEXT,
                "name": _TEXT,
            }
        ),
        "tools": _TEXT,
    }
)
TOOL_SCHEMA = TOOL_FEATURES.arrow_schema
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ExportResult:
    paths: list[Path]
    counts: dict[str, int]  # pairs per exported split
    content_hash: str


@dataclass(frozen=True, slots=True)
class PushResult:
    repo_url: str
    commit_url: str
    counts: dict[str, int]
    content_hash: str


def row_of(pair: Pair, *, tools: bool = False) -> dict[str, Any]:
    """A pair as an export row; ``tools``: with the tool columns (``TOOL_FEATURES``)."""
    row = {name: getattr(pair, name) for name in COLUMNS}
    if tools:
        row["tools"] = orjson.dumps(pair.tools).decode() if pair.tools is not None else None
    return row


def has_tools(db: sqlite3.Connection, splits: Sequence[str]) -> bool:
    """True when a pair of ``splits`` uses tools (the export then has the tool columns)."""
    marks = ", ".join("?" * len(splits))
    sql = f"SELECT EXISTS (SELECT 1 FROM pairs WHERE tools IS NOT NULL AND split IN ({marks}))"
    return bool(db.execute(sql, tuple(splits)).fetchone()[0])


def splits_of(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)} or all)")
    return (split,)


def _batches(
    store: PairStore, db: sqlite3.Connection, splits: Sequence[str], tools: bool
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(split, up to _BATCH rows) in store order, with a progress bar on a terminal."""
    total = sum(store.counts(db)[s] for s in splits)
    bar = tqdm(total=total, unit="pair", desc="export", disable=None, leave=False)
    current, rows = "", list[dict[str, Any]]()
    for pair in store.iter_pairs(db, splits):
        if rows and (pair.split != current or len(rows) >= _BATCH):
            yield current, rows
            bar.update(len(rows))
            rows = []
        current = pair.split
        rows.append(row_of(pair, tools=tools))
    if rows:
        yield current, rows
        bar.update(len(rows))
    bar.close()


def _write_files(
    store: PairStore, fmt: Format, splits: Sequence[str], path_for: Callable[[str], Path]
) -> ExportResult:
    """Stream ``splits`` to one jsonl / parquet file each (an empty split, an empty file)."""
    paths = {s: path_for(s) for s in splits}
    counts = dict.fromkeys(splits, 0)
    with ExitStack() as files, store.transaction("DEFERRED") as db:
        content_hash = store.content_hash(db, splits)
        tools = has_tools(db, splits)
        schema = TOOL_SCHEMA if tools else SCHEMA
        sinks: dict[str, Callable[[list[dict[str, Any]]], None]] = {}
        for split, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "jsonl":
                sinks[split] = _jsonl_sink(files.enter_context(path.open("wb")))
            else:
                writer = files.enter_context(pq.ParquetWriter(path, schema))
                sinks[split] = _parquet_sink(writer, schema)
        for split, rows in _batches(store, db, splits, tools):
            sinks[split](rows)
            counts[split] += len(rows)
    return ExportResult(list(paths.values()), counts, content_hash)


def _jsonl_sink(out: BinaryIO) -> Callable[[list[dict[str, Any]]], None]:
    def write(rows: list[dict[str, Any]]) -> None:
        out.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))

    return write


def _parquet_sink(writer: Any, schema: Any) -> Callable[[list[dict[str, Any]]], None]:
    def write(rows: list[dict[str, Any]]) -> None:
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))

    return write


def dataset_dict(store: PairStore, splits: Sequence[str]) -> tuple[Any, dict[str, int], str]:
    tables: dict[str, list[Any]] = {s: [] for s in splits}
    with store.transaction("DEFERRED") as db:
        content_hash = store.content_hash(db, splits)
        tools = has_tools(db, splits)
        schema, features = (TOOL_SCHEMA, TOOL_FEATURES) if tools else (SCHEMA, FEATURES)
        for split, rows in _batches(store, db, splits, tools):
            tables[split].append(pa.Table.from_pylist(rows, schema=schema))
    info = datasets.DatasetInfo(features=features)
    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset(
                pa.concat_tables(t) if t else schema.empty_table(),
                info=info,
                split=datasets.NamedSplit(s),
            )
            for s, t in tables.items()
        }
    )
    return dd, {s: dd[s].num_rows for s in splits}, content_hash


def export(
    store: PairStore, fmt: Format, output: str | Path, *, split: str = "all"
) -> ExportResult:
    """Write the pairs of ``split`` (train_sft, test_sft or all) to ``output`` as ``fmt``."""
    splits, out = splits_of(split), Path(output)
    if fmt == "hf":
        dd, counts, content_hash = dataset_dict(store, splits)
        # An empty split needs one (empty) shard, or load_from_disk cannot read it back.
        dd.save_to_disk(str(out), num_shards={s: 1 for s, n in counts.items() if n == 0})
        return ExportResult([out], counts, content_hash)
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")
    suffix = f".{fmt}"
    if out.suffix == suffix and len(splits) > 1:
        files = ", ".join(f"{s}{suffix}" for s in splits)
        raise DataError(
            f"{out} names one file, but --split {split} writes one file per split ({files}): "
            "give --split with one split, or a folder as --output"
        )
    single = out if len(splits) == 1 and out.suffix == suffix else None
    return _write_files(store, fmt, splits, lambda s: single or out / f"{s}{suffix}")


@contextmanager
def hub_errors(repo_id: str, endpoint: str, error: type[StandbyError]) -> Iterator[None]:
    """The Hub client's failures as one-line ``error``s: the one place they are translated
    (dataset pushes here and in ``data/hub.py``, the trainer's adapter push)."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise error("cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE)") from None
    except HfHubHTTPError as e:
        status = e.response.status_code
        detail = (e.server_message or str(e)).splitlines()[0]
        raise error(f"pushing {repo_id} to {endpoint}: HTTP {status}: {detail}") from None
    except httpx2.HTTPError as e:
        raise error(f"cannot reach the Hub at {endpoint}: {e}") from None
    except ValueError as e:  # an invalid repo id or revision name, a card the Hub rejects
        raise error(f"pushing {repo_id}: {str(e).splitlines()[0]}") from None


def hub_endpoint(flag: str | None = None) -> str | None:
    """``--hub-endpoint``, else ``HF_ENDPOINT``, else huggingface_hub's default."""
    return flag or os.environ.get("HF_ENDPOINT") or None


def push_to_hub(
    store: PairStore,
    repo_id: str,
    *,
    split: str = "all",
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Create (if needed) the dataset repo ``repo_id`` and commit the pairs of ``split`` to it.
    Without ``private`` the Hub's default visibility for the namespace applies."""
    splits = splits_of(split)
    api = HfApi(endpoint=hub_endpoint(endpoint), token=token)
    with tempfile.TemporaryDirectory(prefix="standby-hub-") as tmp:
        folder = Path(tmp)
        result = _write_files(
            store, "parquet", splits, lambda s: folder / "data" / f"{s}-00000-of-00001.parquet"
        )
        (folder / "README.md").write_text(_card(repo_id, result), encoding="utf-8")
        message = f"standby: {sum(result.counts.values())} pairs ({result.content_hash[:12]})"
        with hub_errors(repo_id, api.endpoint, DataError):
            url = api.create_repo(
                repo_id, repo_type="dataset", exist_ok=True, private=True if private else None
            )
            commit = api.upload_folder(
                repo_id=repo_id, repo_type="dataset", folder_path=folder, commit_message=message
            )
    return PushResult(str(url), commit.commit_url, result.counts, result.content_hash)


def _card(repo_id: str, result: ExportResult) -> str:
    """A dataset card whose YAML tells ``datasets`` the splits and files."""
    meta = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in result.counts],
            }
        ],
        "tags": ["standby", "sft"],
    }
    counts = ", ".join(f"{s}: {n}" for s, n in result.counts.items())
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# {repo_id}\n\n"
        "Training pairs captured by standby: the hosted model's own complete answers "
        "(provenance primary, finish reason stop), deduplicated by prompt, with a stable "
        f"held-out split.\n\n- pairs: {counts}\n- content hash: `{result.content_hash}`\n"
        f"- columns: {', '.join(COLUMNS)}\n"
    )
