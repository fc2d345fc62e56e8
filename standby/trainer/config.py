"""``standby train`` settings: one pydantic model that is at once the YAML schema of
``--from-config config/train.yaml``, the flags (``lora_r`` <-> ``--lora-r``) and the docs.

Defaults follow the published Gemma LoRA recipes: r 16, alpha 16, dropout 0.05 on every
attention and MLP projection, learning rate 2e-4 with a cosine schedule and 10% warm-up,
sequences up to 2048 tokens, bf16 and gradient checkpointing on a GPU (``None`` = decide by the
device). Loss only on the assistant's tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from standby.config import CaptureConfig
from standby.errors import StandbyError
from standby.toolconfig import ToolConfig

GEMMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PositiveInt = Annotated[int, Field(ge=1)]


class TrainError(StandbyError):
    """Training cannot start or finish: the message is one line naming what and why."""


class TrainConfig(ToolConfig):
    """Every setting of ``standby train`` (YAML key = flag name with underscores)."""

    # What to train
    base_model_id: str = Field(
        default="google/gemma-4-E2B-it",
        description="base model: a Hub id (gated Gemma needs HF_TOKEN) or a local folder",
    )
    base_model_revision: str | None = Field(
        default=None, description="Hub branch, tag or commit of the base model"
    )
    train_ds_id: str = Field(
        default="sqlite:///./.standby/pairs.db",
        description="training rows: sqlite:///pairs.db, a local dataset path, or a Hub dataset id",
    )
    train_ds_revision: str | None = Field(default=None, description="Hub revision of the dataset")
    train_ds_split: str = Field(default="train_sft", description="split to train on")
    eval_ds_id: str | None = Field(
        default=None, description="dataset of the held-out split (default: train_ds_id)"
    )
    eval_ds_split: str | None = Field(
        default="test_sft", description="held-out split for eval loss ('' or null: none)"
    )

    # Where it goes
    output_dir: Path = Field(
        default=Path(".standby/adapters/latest"),
        description="adapter folder; {version} in it is replaced by the version"
        " (checkpoints go to its checkpoints/ sub-folder)",
    )
    version: str | None = Field(
        default=None,
        description="adapter version (default: UTC time + data hash), also the Hub tag",
    )
    resume: bool = Field(
        default=False, description="continue from the last checkpoint in output_dir if there is one"
    )
    overwrite: bool = Field(default=False, description="replace a finished adapter in output_dir")
    keep_checkpoints: bool = Field(
        default=False, description="keep checkpoints/ after a successful run"
    )
    merge: bool = Field(
        default=False, description="also save base + adapter merged into output_dir/merged"
    )

    # LoRA
    lora_r: PositiveInt = Field(default=16, description="LoRA rank")
    lora_alpha: PositiveInt = Field(default=16, description="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(GEMMA_PROJECTIONS),
        description="module names that get LoRA (Gemma: every attention and MLP projection)",
    )
    load_in_4bit: bool = Field(
        default=False, description="QLoRA: base model in 4-bit NF4 (CUDA + bitsandbytes only)"
    )

    # Optimisation
    learning_rate: float = Field(default=2e-4, gt=0, description="peak learning rate")
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="learning-rate schedule"
    )
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="share of steps warming up")
    num_train_epochs: float = Field(default=1.0, gt=0, description="passes over the data")
    max_steps: int = Field(default=-1, ge=-1, description="stop after this many steps (-1: epochs)")
    max_time_s: float | None = Field(
        default=None, gt=0, description="budget: stop (and save) after this many seconds"
    )
    per_device_train_batch_size: PositiveInt = Field(default=4, description="rows per step/device")
    per_device_eval_batch_size: PositiveInt = Field(default=8, description="eval rows per batch")
    gradient_accumulation_steps: PositiveInt = Field(default=4, description="steps per update")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(default=1.0, gt=0, description="gradient clipping norm")
    max_length: PositiveInt = Field(default=2048, description="tokens per sequence (truncated)")
    packing: bool = Field(default=False, description="pack several rows into one sequence")
    assistant_only_loss: bool = Field(default=True, description="loss on assistant tokens only")
    seed: int = Field(default=42, description="seed for weights init, shuffling and dropout")

    # Where it runs
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto = cuda if any")
    bf16: bool | None = Field(default=None, description="bf16 mixed precision (default: on GPU)")
    gradient_checkpointing: bool | None = Field(
        default=None, description="trade compute for memory (default: on GPU)"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")

    # Progress, checkpoints, evaluation
    logging_steps: PositiveInt = Field(default=10, description="log the loss every N steps")
    save_steps: PositiveInt = Field(default=100, description="checkpoint every N steps")
    save_total_limit: PositiveInt = Field(default=2, description="checkpoints kept")
    eval_steps: int | None = Field(
        default=None, ge=1, description="eval loss every N steps (default: once, at the end)"
    )

    # Publishing
    push_to_hub: str | None = Field(default=None, description="Hub model repo to push the adapter")
    hub_revision: str | None = Field(default=None, description="branch to push to (default: main)")
    hub_private: bool = Field(default=True, description="create the Hub repo private")
    hub_endpoint: str | None = Field(default=None, description="Hub API URL (default: HF_ENDPOINT)")
    publish_event: bool = Field(default=True, description="publish training.completed on the bus")
    bus: str = Field(
        default=CaptureConfig().bus, description="event bus URL (sqlite:/// or redis://)"
    )

    @field_validator(
        "base_model_revision",
        "train_ds_revision",
        "eval_ds_id",
        "eval_ds_split",
        "version",
        "push_to_hub",
        "hub_revision",
        "hub_endpoint",
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("lora_target_modules")
    @classmethod
    def _some_modules(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one module name")
        return value

    @field_validator("version")
    @classmethod
    def _safe_version(cls, value: str | None) -> str | None:
        if value is not None and not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names a Hub tag)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        return self

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def merged_dir(self) -> Path:
        return self.output_dir / "merged"

    def eval_source(self) -> str | None:
        return None if self.eval_ds_split is None else (self.eval_ds_id or self.train_ds_id)
