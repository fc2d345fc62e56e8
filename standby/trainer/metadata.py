"""What the trainer records in the model card (``standby.store.card``) beyond its losses: the
version name, the settings that shape the weights, and the library versions.

The card says exactly how the adapter was made: the base model and its revision/commit, the
data (source, split, snapshot id, content hash), the hyperparameters, the losses, the wall
time, and library versions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from standby.trainer.config import TrainConfig

# The settings that shape the weights (where it ran and where it is published do not).
HYPERPARAMETERS = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "load_in_4bit",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "max_grad_norm",
    "max_length",
    "packing",
    "assistant_only_loss",
    "seed",
)


def default_version(created_at: datetime, content_hash: str) -> str:
    """``20260201-120000-<8 hex of the data hash>``: sortable, and names the data."""
    return f"{created_at:%Y%m%d-%H%M%S}-{content_hash[:8]}"


def hyperparameters(
    cfg: TrainConfig, *, bf16: bool, gradient_checkpointing: bool
) -> dict[str, Any]:
    values = cfg.model_dump(mode="json", include=set(HYPERPARAMETERS))
    return {k: values[k] for k in HYPERPARAMETERS} | {
        "bf16": bf16,
        "gradient_checkpointing": gradient_checkpointing,
    }


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("standby", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
