"""Push one split of a ``datasets.Dataset`` to a Hub dataset repo, appending or replacing.

Layout as ``datasets.push_to_hub`` writes it, so ``load_dataset(repo, split=...)`` reads it back:
parquet shards ``data/{split}-*.parquet`` and a README card whose ``configs`` name every split's
shards. Append adds a new shard next to the split's old ones; replace deletes the old shards in
the same commit (readers never see a half-replaced split). Used by batch inference, the
evaluator, synth and data merge.
"""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass
from typing import Any

import yaml

from standby.data.export import hub_endpoint, hub_errors
from standby.data.pairs import DataError

_SHARD = re.compile(r"data/(?P<split>[^/]+?)-[^/]*\.parquet")


@dataclass(frozen=True)
class SplitPush:
    repo_url: str
    commit_url: str
    split: str
    rows: int
    shard: str
    removed: tuple[str, ...]


def _splits_in(files: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in files:
        if m := _SHARD.fullmatch(f):
            out.setdefault(m.group("split"), []).append(f)
    return out


def _card(repo_id: str, splits: list[str], description: str) -> str:
    meta = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in sorted(splits)],
            }
        ],
        "tags": ["standby"],
    }
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# {repo_id}\n\n{description}\n\n"
        f"- splits: {', '.join(sorted(splits))}\n"
    )


def push_split(
    ds: Any,
    repo_id: str,
    split: str,
    *,
    append: bool,
    private: bool = True,
    endpoint: str | None = None,
    token: str | None = None,
    description: str = "Written by standby.",
) -> SplitPush:
    """Create the dataset repo if needed and commit ``ds`` as split ``split``: a new shard
    (``append``) or the only one (replace). DataError in one line on any Hub failure."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if not re.fullmatch(r"[A-Za-z0-9_.]+", split):
        raise DataError(f"split name {split!r}: use letters, digits, '_' and '.' only")
    api = HfApi(endpoint=hub_endpoint(endpoint), token=token)
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    buf = io.BytesIO()
    pq.write_table(ds.with_format("arrow")[:], buf)
    shard = f"data/{split}-{uuid.uuid4().hex[:12]}.parquet"
    with hub_errors(repo_id, api.endpoint, DataError):
        url = api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private or None)
        files = list(api.list_repo_files(repo_id, repo_type="dataset"))
        splits = _splits_in(files)
        removed = () if append else tuple(splits.get(split, ()))
        names = {*splits, split}
        ops: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in removed]
        ops.append(CommitOperationAdd(path_in_repo=shard, path_or_fileobj=buf.getvalue()))
        card = _card(repo_id, sorted(names), description).encode()
        ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
        verb = "append to" if append else "replace"
        commit = api.create_commit(
            repo_id,
            ops,
            repo_type="dataset",
            commit_message=f"standby: {verb} split {split} ({ds.num_rows} rows)",
        )
    return SplitPush(str(url), commit.commit_url, split, int(ds.num_rows), shard, removed)
