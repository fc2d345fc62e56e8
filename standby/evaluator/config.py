"""Settings of ``standby batch-infer``, ``standby evaluate`` and ``standby gate``: the original
tools' flag names (kept so existing configs and scripts work) plus what the fixes need. Every field
is a YAML key of ``--from-config`` and a flag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from standby.service_llm import ServiceLLMSettings
from standby.toolconfig import ToolConfig

Score = Annotated[float, Field(ge=1, le=100)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class HubPushSettings(ToolConfig):
    """Where a dataset is pushed (``HF_TOKEN`` from the environment)."""

    hub_endpoint: str | None = Field(
        default=None, description="Hub URL (default: $HF_ENDPOINT or huggingface.co)"
    )
    hub_private: bool = Field(default=True, description="Create pushed repos as private")

    def push_rows(
        self, rows: list[dict[str, Any]], repo_id: str, split: str, *, append: bool, about: str
    ) -> str:
        """Commit ``rows`` as split ``split`` of the dataset repo ``repo_id`` (appending a shard
        or replacing the split), its card saying ``about``; the commit URL."""
        import datasets  # type: ignore[import-untyped]

        from standby.data.hub import push_split

        pushed = push_split(
            datasets.Dataset.from_list(rows),
            repo_id,
            split,
            append=append,
            private=self.hub_private,
            endpoint=self.hub_endpoint,
            description=about,
        )
        return pushed.commit_url


class BatchInferConfig(HubPushSettings):
    """``standby batch-infer``: answer every held-out instruction with the candidate model."""

    ft_model_id: str | None = Field(
        default=None,
        description="The fine-tuned model: a LoRA adapter (or a full model), local path or Hub id",
    )
    ft_model_revision: str | None = Field(default=None, description="Hub revision of it")
    base_model_id: str | None = Field(
        default=None,
        description="Base model under the adapter (default: the adapter's base_model_name_or_path)",
    )
    base_model_revision: str | None = Field(default=None, description="Hub revision of it")
    backend: str | None = Field(
        default=None,
        description="Instead of a local model: a backend of --gateway-config by name "
        "(gemini, a vLLM/TGI deployment...)",
    )
    gateway_config: Path = Field(
        default=Path("standby.yaml"), description="standby.yaml that defines --backend"
    )
    test_ds_id: str = Field(
        description="Test rows: Hub dataset id, local file/folder, or sqlite:///pairs.db"
    )
    test_ds_split: str = Field(default="test_sft", description="Split of the test rows")
    test_ds_revision: str | None = Field(default=None, description="Hub revision of them")
    batch_infer_data_preprocess_bs: Annotated[int, Field(ge=1)] = Field(
        default=64, description="Rows prepared and handed to the model per step"
    )
    inference_bs: Annotated[int, Field(ge=1)] = Field(
        default=8, description="Generation batch size (local model); requests in flight (backend)"
    )
    repeat: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Answers per instruction (seed + repeat index each)"
    )
    temperature: Annotated[float, Field(ge=0, le=2)] = Field(
        default=0.7, description="Sampling temperature (0: greedy)"
    )
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(default=0.95, description="Nucleus p")
    max_new_tokens: Annotated[int, Field(ge=1)] = Field(default=512, description="Answer limit")
    seed: int = Field(default=42, description="Sampling seed of repeat 0")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="Device")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype (auto: bfloat16 on CUDA, else float32)"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    max_rows: int | None = Field(
        default=None, ge=1, description="Use only the first N rows (smoke runs)"
    )
    output_dir: Path = Field(
        default=Path(".standby/batch_infer"),
        description="Where the answers go ({split}.jsonl) and the resume log lives",
    )
    overwrite: bool = Field(
        default=False, description="Start over even if output_dir holds a finished or other run"
    )
    push_lm_responses_to_hf_hub: bool = Field(
        default=False, description="Push the answers to --lm-response-ds-id"
    )
    lm_response_ds_id: str | None = Field(default=None, description="Hub dataset repo to push to")
    lm_response_ds_split: str = Field(default="batch_infer", description="Split of the answers")
    lm_response_append: bool = Field(
        default=True, description="Add to the split on the Hub (--no-lm-response-append replaces)"
    )

    @model_validator(mode="after")
    def _one_model(self) -> BatchInferConfig:
        if (self.ft_model_id is None) == (self.backend is None):
            raise ValueError("give exactly one of --ft-model-id or --backend")
        if self.push_lm_responses_to_hf_hub and not self.lm_response_ds_id:
            raise ValueError("--push-lm-responses-to-hf-hub needs --lm-response-ds-id")
        return self


class GateSettings(ToolConfig):
    """The promotion gate: absolute thresholds, then "not worse than the serving model"."""

    avg_similarity_threshold: Score = Field(
        default=90, description="Mean similarity (1-100) a candidate must reach"
    )
    avg_precision_threshold: Score = Field(
        default=90, description="Mean precision (1-100) a candidate must reach"
    )
    baseline_eval_ds_id: str | None = Field(
        default=None,
        description="Evaluation of the serving model on the same rows (local folder/file or "
        "Hub id); none: thresholds only",
    )
    baseline_eval_ds_split: str = Field(default="eval", description="Split of it")
    non_inferiority_margin: Annotated[float, Field(ge=0, le=100)] = Field(
        default=2.0,
        description="Points the candidate may trail the serving model (the CI's lower bound "
        "of candidate - serving must stay above -margin)",
    )
    bootstrap_samples: Annotated[int, Field(ge=100)] = Field(
        default=2000, description="Paired bootstrap resamples"
    )
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = Field(
        default=0.95, description="Two-sided confidence level of the CI"
    )
    candidate_adapter_dir: Path | None = Field(
        default=None,
        description="On a pass, write the scores into this adapter's standby-model.json",
    )
    min_tool_name_accuracy: Fraction = Field(
        default=0.9,
        description="With rows that offer tools: the share (0-1) whose calls name the "
        "expected functions",
    )
    min_tool_args_accuracy: Fraction = Field(
        default=0.8,
        description="With rows that offer tools: the share (0-1) of expected calls made with "
        "the expected arguments (equal as JSON)",
    )
    min_tool_args_valid: Fraction = Field(
        default=0.95,
        description="With rows that offer tools: the share (0-1) of answers with calls whose "
        "arguments are valid against the declared schema",
    )


class EvaluateConfig(ServiceLLMSettings, GateSettings, HubPushSettings):
    """``standby evaluate``: the service-LLM judge over batch-inference answers."""

    prompt_tmpl_path: Path | None = Field(
        default=None,
        description="Judge prompt template (default: standby/evaluator/prompts/judge.txt)",
    )
    lm_response_ds_id: str = Field(
        description="Answers to judge: batch-infer output folder/file, or Hub dataset id"
    )
    lm_response_ds_split: str = Field(default="batch_infer", description="Split of the answers")
    lm_response_ds_revision: str | None = Field(default=None, description="Hub revision")
    eval_repeat: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Judgements per answer, averaged"
    )
    eval_workers: Annotated[int, Field(ge=1)] = Field(
        default=8, description="Judge calls in flight"
    )
    cache_path: Path | None = Field(
        default=Path(".standby/judge_cache.db"),
        description="SQLite cache of judgements (re-runs of unchanged rows cost nothing)",
    )
    output_dir: Path = Field(
        default=Path(".standby/evaluation"),
        description="Where the report (report.json, .md, .html) and the eval rows go",
    )
    push_eval_to_hf_hub: bool = Field(default=False, description="Push the eval rows")
    eval_ds_id: str | None = Field(default=None, description="Hub dataset repo to push them to")
    eval_ds_split: str = Field(default="eval", description="Split of the eval rows")
    eval_ds_append: bool = Field(
        default=False, description="Add to the split on the Hub instead of replacing it"
    )
    gate: bool = Field(
        default=True, description="Apply the gate and write its decision into the report"
    )
    bus: str | None = Field(
        default=None,
        description="Event bus for evaluation.completed (sqlite:///... or redis://...)",
    )

    @model_validator(mode="after")
    def _push_target(self) -> EvaluateConfig:
        if self.push_eval_to_hf_hub and not self.eval_ds_id:
            raise ValueError("--push-eval-to-hf-hub needs --eval-ds-id")
        return self


class GateConfig(GateSettings):
    """``standby gate``: decide from a finished evaluation (no judge calls); the decision is
    written into that evaluation's report."""

    output_dir: Path = Field(
        default=Path(".standby/evaluation"),
        description="The candidate's evaluation (standby evaluate's --output-dir)",
    )
    eval_ds_split: str = Field(default="eval", description="Split name of its eval rows")
