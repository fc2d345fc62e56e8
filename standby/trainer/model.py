"""The base model and tokenizer for training: where they come from, on which device, in which
precision, and the one boundary where Hub / transformers errors become one-line TrainErrors
(gated repo without HF_TOKEN, missing repo or revision, offline without a cached copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from standby.chat_format import chat_template
from standby.hf_loading import load_reason, looks_like_path, model_path, resolve_device
from standby.trainer.config import TrainConfig, TrainError


@dataclass(frozen=True)
class Placement:
    """Where training runs and how: the device, mixed precision, checkpointing, 4-bit."""

    device: str
    bf16: bool
    gradient_checkpointing: bool
    load_in_4bit: bool


@dataclass(frozen=True)
class BaseModel:
    """The loaded base model, its tokenizer, and what identifies them."""

    model: Any
    tokenizer: Any
    model_id: str
    revision: str | None
    sha: str | None


def place(cfg: TrainConfig) -> Placement:
    """The device and precision for ``cfg``; TrainError for a device this machine lacks or QLoRA
    asked for off CUDA."""
    import torch

    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise TrainError(f"--device: {e}") from None
    if device == "mps":  # resolve_device's auto also knows Apple GPUs; the trainer keeps to CPU
        device = "cpu"
    on_gpu = device == "cuda"
    if cfg.load_in_4bit:
        if not on_gpu:
            raise TrainError(
                f"--load-in-4bit (QLoRA) needs a CUDA GPU; this run is on {device}"
                " (train in full precision with --no-load-in-4bit)"
            )
        try:
            import bitsandbytes  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise TrainError(
                "--load-in-4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes"
            ) from None
    bf16 = cfg.bf16 if cfg.bf16 is not None else on_gpu and torch.cuda.is_bf16_supported()
    checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else on_gpu
    return Placement(device, bf16, checkpointing, cfg.load_in_4bit)


def load_base(cfg: TrainConfig, placement: Placement) -> BaseModel:
    """Tokenizer and model of ``cfg.base_model_id`` at ``cfg.base_model_revision``; the
    tokenizer's chat template is checked before the weights load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.hub import resolve_revision

    ref = cfg.base_model_id
    if looks_like_path(ref) and not Path(ref).expanduser().is_dir():
        raise TrainError(f"base model {ref!r}: no such directory")
    path = model_path(ref)
    # One commit for every file (a branch can move while we load), and its sha for the card.
    revision = resolve_revision(path, cfg.base_model_revision)
    sha = getattr(revision, "resolved", None)
    kwargs: dict[str, Any] = {"revision": revision}
    if placement.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if placement.bf16 else torch.float16,
        )
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    dtype = torch.bfloat16 if placement.bf16 else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except Exception as e:  # the one boundary for hub / transformers loading errors
        raise TrainError(f"cannot load base model {ref!r}: {load_reason(e)}") from e
    check_chat_template(tokenizer, cfg)  # before the weights: a 7B model takes a while
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except Exception as e:
        raise TrainError(f"cannot load base model {ref!r}: {load_reason(e)}") from e
    return BaseModel(model, tokenizer, ref, cfg.base_model_revision, sha)


def check_chat_template(tokenizer: Any, cfg: TrainConfig) -> None:
    """The tokenizer must have a chat template (one without assistant markers trains on each
    conversation's last answer: ``standby.trainer.completion``)."""
    if chat_template(tokenizer) is None:
        raise TrainError(
            f"base model {cfg.base_model_id!r}: its tokenizer has no chat template"
            " (use an instruction-tuned model, e.g. google/gemma-4-E2B-it)"
        )
