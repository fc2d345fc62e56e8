"""What happens to a finished adapter: a Hub model repo at a branch and a tag, and a
``training.completed`` event on the bus for the pipeline (the evaluator picks it up)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from standby.store.card import ModelCard, card_path
from standby.trainer.config import TrainConfig, TrainError

SOURCE = "standby.trainer"
TOPIC: Final = "training.completed"
# Only the adapter travels: checkpoints are resumable state, merged/ is a full model.
NOT_PUSHED = ["checkpoints/**", "merged/**", "*.tmp"]


def push_adapter(cfg: TrainConfig, adapter_dir: Path, version: str) -> dict[str, Any]:
    """Create (if needed) the model repo ``cfg.push_to_hub``, commit the adapter folder to
    ``cfg.hub_revision`` (a branch, made from main if new) and tag that commit ``version``.
    TrainError (one line) on any Hub failure."""
    from huggingface_hub import HfApi

    from standby.data.export import hub_endpoint, hub_errors

    repo_id = cfg.push_to_hub
    assert repo_id is not None
    api = HfApi(endpoint=hub_endpoint(cfg.hub_endpoint))
    with hub_errors(repo_id, api.endpoint, TrainError):
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True, private=cfg.hub_private)
        if cfg.hub_revision:
            api.create_branch(repo_id, branch=cfg.hub_revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=adapter_dir,
            revision=cfg.hub_revision,
            commit_message=f"standby: adapter {version}",
            ignore_patterns=NOT_PUSHED,
        )
        api.create_tag(repo_id, tag=version, revision=commit.oid, exist_ok=False)
    return {
        "repo_id": repo_id,
        "url": str(url),
        "revision": cfg.hub_revision or "main",
        "tag": version,
        "commit": commit.oid,
    }


def completed_event_data(adapter_dir: Path, card: ModelCard) -> dict[str, Any]:
    """The ``training.completed`` payload: enough to evaluate and serve the adapter without
    reading the card (which it points to)."""
    data, base, metrics, files = card.dataset, card.base_model, card.metrics, card.adapter
    if data is None or base is None or metrics is None or files is None:
        raise TrainError(f"{card_path(adapter_dir)}: not the card of a finished training run")
    return {
        "version": card.version,
        "adapter_dir": str(adapter_dir.resolve()),
        "base_model": base.id,
        "base_model_revision": base.revision,
        "dataset_source": data.source,
        "snapshot_id": data.snapshot_id,
        "content_hash": data.content_hash,
        "train_loss": metrics.train_loss,
        "eval_loss": metrics.eval_loss,
        "merged_dir": files.merged,
        "hub": card.hub,
    }


def check_bus(bus_url: str) -> None:
    """Fail before training, not after it, when the bus cannot be opened or written."""
    from standby.store import open_bus

    async def run() -> None:
        async with open_bus(bus_url) as bus:
            await bus.check()

    asyncio.run(run())


def publish_completed(bus_url: str, adapter_dir: Path, card: ModelCard) -> str:
    """Publish ``training.completed``; returns the event id."""
    from standby.store import PipelineEvent, open_bus

    event = PipelineEvent(type=TOPIC, source=SOURCE, data=completed_event_data(adapter_dir, card))

    async def run() -> str:
        async with open_bus(bus_url) as bus:
            return await bus.publish(TOPIC, event)

    return asyncio.run(run())
