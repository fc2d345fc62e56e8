"""Settings of ``standby synth``: the original tool's flag names (kept:
``--reference-ds-id``, ``--num-samples``, ``--seed``, ``--topic``, ``--gen-workers``,
``--push-synth-ds-to-hf-hub``, ``--synth-ds-id``, ``--synth-ds-split``, ``--synth-ds-append``, and
the service-LLM flags) plus what the fixes need (dedup, decontamination, targeted mode). Every
field is a YAML key of ``--from-config`` and a flag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from standby.service_llm import ServiceLLMSettings

Fraction = Annotated[float, Field(gt=0, le=1)]
Positive = Annotated[int, Field(ge=1)]


class SynthConfig(ServiceLLMSettings):
    """``standby synth``: new training pairs from the service LLM, seeded by reference rows."""

    reference_ds_id: str = Field(
        default="sqlite:///./.standby/pairs.db",
        description="Seed rows: Hub dataset id, local file/folder, or sqlite:///pairs.db",
    )
    reference_ds_split: str = Field(default="train_sft", description="Split of the seed rows")
    reference_ds_revision: str | None = Field(default=None, description="Hub revision of them")
    from_evaluation: Path | None = Field(
        default=None,
        description="Targeted mode: an evaluation report (report.json) or its eval rows; the "
        "lowest-scoring rows become the seeds instead of --reference-ds-id's",
    )
    worst_rows: Positive = Field(
        default=20, description="Targeted mode: how many of the lowest-scoring rows seed"
    )
    test_ds_ids: list[str] = Field(
        default_factory=list,
        description="More datasets whose held-out splits no synthetic item may be near "
        "(the reference dataset's are always checked)",
    )
    test_ds_splits: list[str] = Field(
        default_factory=lambda: ["test_sft"], description="The held-out/test split names"
    )
    num_samples: Positive = Field(default=100, description="New pairs to ask for")
    seed: int = Field(default=42, description="Seed of the sampling (same seed, same requests)")
    topic: str | None = Field(
        default=None, description="Steer every new item to this topic (default: the seeds')"
    )
    gen_workers: Positive = Field(default=4, description="Service-LLM calls in flight")
    mode: Literal["one-stage", "two-stage"] = Field(
        default="one-stage",
        description="one-stage: instruction and answer in one call; two-stage: instructions "
        "first, then each answered by its own call",
    )
    seeds_per_request: Positive = Field(
        default=3, description="Seed examples shown in each request (few-shot)"
    )
    items_per_request: Annotated[int, Field(ge=1, le=20)] = Field(
        default=1, description="New items asked for in each request"
    )
    min_instruction_chars: Annotated[int, Field(ge=1)] = Field(
        default=10, description="Shorter instructions are invalid"
    )
    max_instruction_chars: Positive = Field(
        default=4000, description="Longer instructions are invalid"
    )
    min_response_chars: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Shorter answers are invalid"
    )
    max_response_chars: Positive = Field(default=16000, description="Longer answers are invalid")
    dedup_threshold: Fraction = Field(
        default=0.7,
        description="Near-duplicate: Jaccard of character n-grams at or above this",
    )
    dedup_ngram: Positive = Field(default=5, description="Character n-gram size for dedup")
    decontam_threshold: Fraction = Field(
        default=0.6,
        description="Contaminated: Jaccard of content words with a test prompt at or above this",
    )
    decontam_ngram: Positive = Field(
        default=10,
        description="Contaminated: this many consecutive words shared with a test prompt",
    )
    judge_filter: bool = Field(
        default=False,
        description="Score every new pair with the evaluator's judge and keep the good ones",
    )
    judge_threshold: Annotated[float, Field(ge=1, le=100)] = Field(
        default=70, description="Judge filter: lowest precision score (1-100) kept"
    )
    judge_prompt_tmpl_path: Path | None = Field(
        default=None,
        description="Judge filter's prompt template (placeholders {instruction}, "
        "{target_response} = the seed requests, {candidate_response}); default: built in",
    )
    output_dir: Path = Field(
        default=Path(".standby/synth"),
        description="Where the new rows ({synth_ds_split}.jsonl) and summary.json go",
    )
    push_synth_ds_to_hf_hub: bool = Field(default=False, description="Push the new rows")
    synth_ds_id: str | None = Field(default=None, description="Hub dataset repo to push them to")
    synth_ds_split: str = Field(default="train_sft", description="Split of the new rows")
    synth_ds_append: bool = Field(
        default=True,
        description="Add to the split (local file and Hub) instead of replacing it",
    )
    hub_endpoint: str | None = Field(
        default=None, description="Hub URL (default: $HF_ENDPOINT or huggingface.co)"
    )
    hub_private: bool = Field(default=True, description="Create a pushed repo as private")
    bus: str | None = Field(
        default=None,
        description="Event bus for dataset.snapshot_created (sqlite:///... or redis://...)",
    )
    progress: bool = Field(default=True, description="Progress bar on a terminal")

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if self.push_synth_ds_to_hf_hub and not self.synth_ds_id:
            raise ValueError("--push-synth-ds-to-hf-hub needs --synth-ds-id")
        if self.min_instruction_chars > self.max_instruction_chars:
            raise ValueError("--min-instruction-chars is above --max-instruction-chars")
        if self.min_response_chars > self.max_response_chars:
            raise ValueError("--min-response-chars is above --max-response-chars")
        return self
