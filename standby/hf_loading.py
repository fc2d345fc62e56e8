"""Loading Hugging Face models, shared by the local provider and the trainer: where a reference
points (a Hub id or a local folder), which device and precision, and why a load failed in one
line (gated repository without HF_TOKEN, missing repository or revision, offline without a
cached copy).

No torch or huggingface_hub at import: each function imports what it needs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from standby.errors import one_line


@contextmanager
def library_warnings_quiet() -> Iterator[None]:
    """Around peft calls: peft 0.21 calls a transformers 5 property that is deprecated
    (``is_gradient_checkpointing``), a FutureWarning the user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield


def looks_like_path(ref: str) -> bool:
    """Hub ids are ``name`` or ``namespace/name``; these can only be local paths."""
    return os.path.isabs(ref) or ref.startswith((".", "~"))


def model_path(ref: str) -> str:
    """A Hub id as it is; a local path with ``~`` expanded."""
    return str(Path(ref).expanduser()) if ref.startswith("~") else ref


def resolve_device(wanted: str) -> str:
    """``auto`` = cuda > mps > cpu; an explicit device must exist (ValueError otherwise)."""
    import torch

    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if wanted == "auto":
        return next((d for d in ("cuda", "mps") if has[d]), "cpu")
    if wanted != "cpu" and not has[wanted]:
        raise ValueError(f"device {wanted!r} is not available on this machine")
    return wanted


def resolve_dtype(wanted: str, device: str) -> Any:
    """``auto`` = bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if wanted == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, wanted)


def load_reason(e: BaseException) -> str:
    """Why a model could not be loaded, in one line: the Hub error (also inside transformers'
    wrapper), most specific first, else the error itself."""
    from huggingface_hub import errors as hub

    hub_errors = (hub.HfHubHTTPError, hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled)
    seen: BaseException | None = e
    while seen is not None and not isinstance(seen, hub_errors):
        seen = seen.__cause__ or seen.__context__
    cause = seen or e
    if isinstance(cause, hub.GatedRepoError):
        return "the repository is gated: accept its licence on the Hub and set HF_TOKEN"
    if isinstance(cause, hub.RevisionNotFoundError):
        return "that revision does not exist"
    if isinstance(cause, hub.RepositoryNotFoundError):
        return "no such repository on the Hub (or it is private: set HF_TOKEN)"
    if isinstance(cause, hub.LocalEntryNotFoundError | hub.OfflineModeIsEnabled):
        return "not a local folder and not in the Hub cache (offline)"
    return one_line(cause)
