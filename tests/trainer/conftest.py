"""A small chat dataset in the no_robots schema, settings for the tiny Gemma on CPU, and one
adapter trained once per session (the tests that only read it share it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from standby.trainer.config import TrainConfig
from standby.trainer.train import TrainResult, train


def chat_rows(start: int, count: int) -> list[dict[str, Any]]:
    """Questions with a pattern a tiny model picks up in a few dozen steps; every fifth row
    has a system message, every seventh is two exchanges long."""
    rows = []
    for i in range(start, start + count):
        messages = [
            {"role": "user", "content": f"What comes after {i}?"},
            {"role": "assistant", "content": f"After {i} comes {i + 1}."},
        ]
        if i % 7 == 0:
            messages += [
                {"role": "user", "content": "And before it?"},
                {"role": "assistant", "content": f"Before {i} comes {i - 1}."},
            ]
        if i % 5 == 0:
            messages.insert(0, {"role": "system", "content": "Answer in one sentence."})
        rows.append(
            {
                "prompt": messages[-2]["content"],
                "prompt_id": f"p{i}",
                "messages": messages,
                "category": "Open QA",
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chat_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``train_sft.jsonl`` (48 rows) and ``test_sft.jsonl`` (8 rows)."""
    folder = tmp_path_factory.mktemp("chats")
    write_jsonl(folder / "train_sft.jsonl", chat_rows(0, 48))
    write_jsonl(folder / "test_sft.jsonl", chat_rows(100, 8))
    return folder


def tiny_settings(model: Path, data: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """``standby train`` settings for the tiny Gemma on CPU: a few dozen quick steps."""
    return {
        "base_model_id": str(model),
        "train_ds_id": str(data),
        "output_dir": str(out),
        "device": "cpu",
        "threads": 1,
        "max_steps": 30,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "learning_rate": 3e-3,
        "lora_r": 8,
        "logging_steps": 5,
        "save_steps": 10,
        "max_length": 256,
        "publish_event": False,
        **overrides,
    }


def flags(settings: dict[str, Any]) -> list[str]:
    """The command-line flags that give ``settings``."""
    argv: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, chat_dataset: Path
) -> tuple[TrainConfig, TrainResult]:
    """One full ``train()`` run: merged model, event published to a session bus."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig.model_validate(
        tiny_settings(
            tiny_model_dir,
            chat_dataset,
            tmp / "adapter",
            merge=True,
            publish_event=True,
            bus=f"sqlite:///{tmp / 'events.db'}",
        )
    )
    return cfg, train(cfg)
