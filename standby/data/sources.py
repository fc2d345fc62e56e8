"""Where a tool's rows come from, in one place: the trainer, batch inference, the evaluator and
synth all read the no_robots schema (``prompt, prompt_id, messages, category``; splits
``train_sft`` / ``test_sft``) from

- the pair store: ``sqlite:///path/pairs.db`` (its current pairs; the snapshot id is set when
  the store has not changed since its last snapshot);
- a local path: a ``save_to_disk`` folder (``standby data export --format hf``), a folder of
  ``{split}.jsonl`` / ``{split}.parquet`` files, or one ``.jsonl`` / ``.json`` / ``.parquet`` /
  ``.csv`` file (the split itself);
- otherwise a Hugging Face Hub dataset id, at ``revision`` when given.

Every source comes back with a content hash of its rows, so what a model was trained or judged
on can be named exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]
import orjson

from standby.data.pairs import DataError

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Loaded:
    """One split of a dataset and what identifies it."""

    dataset: Any  # datasets.Dataset
    source: str
    split: str
    content_hash: str
    snapshot_id: str | None = None
    revision: str | None = None

    @property
    def rows(self) -> int:
        return int(self.dataset.num_rows)


def load_split(source: str, split: str, *, revision: str | None = None) -> Loaded:
    """The rows of ``split`` from ``source`` (see the module doc); DataError when the source or
    the split does not exist, in one line."""
    if source.startswith("sqlite:"):
        return _from_pair_store(source, split)
    path = Path(source).expanduser()
    if path.exists():
        return _from_path(path, source, split)
    if source.startswith((".", "/", "~")) or Path(source).suffix in FILE_FORMATS:
        raise DataError(f"{source}: no such file or folder")
    return _from_hub(source, split, revision)


def _from_pair_store(source: str, split: str) -> Loaded:
    from standby.config import DataConfig
    from standby.data.export import dataset_dict, splits_of
    from standby.data.pairs import PairStore

    with PairStore.from_config(DataConfig(store=source)) as store:
        dd, _, content_hash = dataset_dict(store, splits_of(split))
        last = store.last_snapshot()
    with_snapshot = None
    if last is not None and last.content_hash == _store_hash(source):
        with_snapshot = last.id
    return Loaded(dd[split], source, split, content_hash, snapshot_id=with_snapshot)


def _store_hash(source: str) -> str:
    from standby.config import DataConfig
    from standby.data.pairs import PairStore

    with (
        PairStore.from_config(DataConfig(store=source)) as store,
        store.transaction("DEFERRED") as db,
    ):
        return store.content_hash(db)


def _from_path(path: Path, source: str, split: str) -> Loaded:
    if path.is_file():
        fmt = FILE_FORMATS.get(path.suffix)
        if fmt is None:
            raise DataError(f"{source}: unknown file type (expected {', '.join(FILE_FORMATS)})")
        ds = _read_file(path, fmt)
        return Loaded(ds, source, split, content_hash(ds))
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        loaded = _quiet(datasets.load_from_disk, str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{source}: no split {split!r} (has {', '.join(loaded)})")
            loaded = loaded[split]
        return Loaded(loaded, source, split, content_hash(loaded))
    for suffix, fmt in FILE_FORMATS.items():
        file = path / f"{split}{suffix}"
        if file.exists():
            ds = _read_file(file, fmt)
            return Loaded(ds, source, split, content_hash(ds))
    have = sorted(p.name for p in path.iterdir())[:10]
    raise DataError(
        f"{source}: no {split}.jsonl / {split}.parquet / saved dataset here"
        f" (found: {', '.join(have) or 'nothing'})"
    )


def _read_file(path: Path, fmt: str) -> Any:
    """One file as a Dataset; an empty file is an empty dataset (the json reader cannot infer
    a schema from nothing)."""
    if path.stat().st_size == 0:
        return datasets.Dataset.from_list([])
    return _quiet(datasets.load_dataset, fmt, data_files=str(path), split="train")


def _from_hub(source: str, split: str, revision: str | None) -> Loaded:
    try:
        ds = _quiet(datasets.load_dataset, source, split=split, revision=revision)
    except ValueError as e:  # unknown split
        raise DataError(f"{source}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # the Hub client raises many types: name it, one line
        raise DataError(
            f"{source}: cannot load dataset from the Hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'})"
        ) from None
    return Loaded(ds, source, split, content_hash(ds), revision=revision)


def _quiet(load: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a datasets loader with its progress bars off (ours are the ones that count)."""
    enabled = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        if enabled:
            datasets.utils.logging.enable_progress_bar()


def content_hash(ds: Any) -> str:
    """SHA-256 over the rows in order (canonical JSON per row): equal rows, equal hash."""
    h = hashlib.sha256()
    for batch in ds.iter(batch_size=1000):
        keys = sorted(batch)
        for values in zip(*(batch[k] for k in keys), strict=True):
            h.update(
                orjson.dumps(dict(zip(keys, values, strict=True)), option=orjson.OPT_SORT_KEYS)
            )
            h.update(b"\n")
    return h.hexdigest()


def require_columns(ds: Any, columns: tuple[str, ...], where: str) -> None:
    """DataError naming the missing columns and the ones there are."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (has: {', '.join(ds.column_names) or 'none'})"
        )


def instruction_and_target(messages: list[dict[str, str]]) -> tuple[str, str]:
    """The first user message and the first assistant message after it (no_robots)."""
    instruction = target = None
    for m in messages:
        if m.get("role") == "user" and instruction is None:
            instruction = m.get("content") or ""
        elif m.get("role") == "assistant" and instruction is not None:
            target = m.get("content") or ""
            break
    if instruction is None or target is None:
        raise DataError("row has no user message followed by an assistant message")
    return instruction, target
