"""``config/pipeline.yaml``: when the pipeline runs and how each of its stages is set up. Every
key is also a ``standby pipeline`` flag; the ``train``, ``batch_infer`` and ``evaluate``
sections hold the same keys as ``config/train.yaml``, ``config/batch_inference.yaml`` and
``config/evaluation.yaml`` (what the pipeline decides per run - data, folders, the model under
test, the serving model's evaluation - is filled in by the pipeline and cannot be set here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from standby.config import CaptureConfig, DataConfig
from standby.toolconfig import ToolConfig

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

# Keys of the stage sections that each run sets itself.
RUN_OWNED = {
    "train": {
        "base_model_id",
        "base_model_revision",
        "train_ds_id",
        "train_ds_split",
        "eval_ds_id",
        "output_dir",
        "version",
        "resume",
        "overwrite",
        "bus",
    },
    "batch_infer": {
        "ft_model_id",
        "ft_model_revision",
        "base_model_id",
        "base_model_revision",
        "backend",
        "test_ds_id",
        "test_ds_split",
        "output_dir",
        "max_rows",
    },
    "evaluate": {
        "lm_response_ds_id",
        "lm_response_ds_split",
        "output_dir",
        "gate",
        "bus",
        "baseline_eval_ds_id",
        "candidate_adapter_dir",
        "cache_path",
    },
}


class PipelineConfig(ToolConfig):
    """Every setting of ``standby pipeline run | once``."""

    bus: str = Field(
        default=CaptureConfig().bus,
        description="event bus URL; the registry, runs and the worker lease live beside it",
    )
    store: str = Field(default=DataConfig().store, description="pair store URL (sqlite:///)")
    backend: str = Field(default="gemma", description="the gateway backend the model is for")
    base_model_id: str = Field(
        default="google/gemma-4-E2B-it", description="base model the adapters are trained on"
    )
    base_model_revision: str | None = Field(default=None, description="its Hub revision")
    work_dir: Path = Field(
        default=Path(".standby/pipeline"),
        description="runs/<run id>/ holds each run's adapter, answers and evaluation",
    )
    min_new_pairs: Annotated[int, Field(ge=1)] = Field(
        default=200, description="new or updated pairs since the last run's snapshot to start one"
    )
    min_interval_s: Annotated[float, Field(ge=0)] = Field(
        default=6 * 3600.0, description="seconds between the starts of two runs"
    )
    poll_s: Seconds = Field(default=30.0, description="how often the worker looks for work")
    lease_ttl_s: Seconds = Field(
        default=120.0, description="a worker that stops renewing its lease for this long is gone"
    )
    materialize: bool = Field(
        default=True, description="also turn inference.completed events into pairs (in-process)"
    )
    auto_promote: bool = Field(default=True, description="promote a candidate that passes")
    max_judge_calls: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="budget per run: held-out rows x eval_repeat is capped to it (re-asks of "
        "malformed answers come on top)",
    )
    max_train_time_s: Seconds | None = Field(
        default=None, description="budget per run: training stops (and saves) after this long"
    )
    online_check: bool = Field(
        default=True,
        description="judge sampled fallback answers against the primary's; roll back when the "
        "serving version's running mean falls below the gate",
    )
    online_sample_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.1, description="share of eligible fallback answers judged"
    )
    online_min_samples: Annotated[int, Field(ge=1)] = Field(
        default=20, description="judged answers needed before a rollback can happen"
    )
    online_window: Annotated[int, Field(ge=1)] = Field(
        default=100, description="the running mean covers the last this many judged answers"
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        default=None, description="serve /metrics (standby_pipeline_runs_total) on this port"
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address /metrics listens on (0.0.0.0 in a container)"
    )
    train: dict[str, Any] = Field(default_factory=dict, description="config/train.yaml keys")
    batch_infer: dict[str, Any] = Field(
        default_factory=dict, description="config/batch_inference.yaml keys"
    )
    evaluate: dict[str, Any] = Field(
        default_factory=dict, description="config/evaluation.yaml keys (judge, thresholds)"
    )

    @field_validator("train", "batch_infer", "evaluate")
    @classmethod
    def _not_run_owned(cls, section: dict[str, Any], info: Any) -> dict[str, Any]:
        owned = sorted(set(section) & RUN_OWNED[info.field_name])
        if owned:
            raise ValueError(f"{', '.join(owned)}: set by the pipeline for each run")
        return section
