"""standby.hf_loading: references, devices and precisions, and load errors in one line."""

from __future__ import annotations

import httpx2
import pytest
import torch
from huggingface_hub import errors as hub

from standby.hf_loading import (
    load_reason,
    looks_like_path,
    model_path,
    resolve_device,
    resolve_dtype,
)


def test_device_and_dtype_resolution() -> None:
    has_mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda") is torch.bfloat16
    assert resolve_dtype("float16", "cpu") is torch.float16


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="device 'cuda' is not available on this machine"):
        resolve_device("cuda")


def test_hub_ids_and_paths() -> None:
    assert not looks_like_path("google/gemma-3-1b-it")
    assert all(looks_like_path(p) for p in ("/models/x", "./x", "../x", "~/x"))
    assert model_path("google/gemma-3-1b-it") == "google/gemma-3-1b-it"
    assert not model_path("~/x").startswith("~")


def _gated() -> hub.GatedRepoError:
    request = httpx2.Request("GET", "https://huggingface.co/api/models/google/gemma-3-1b-it")
    return hub.GatedRepoError("403 gated", response=httpx2.Response(403, request=request))


def test_load_reasons_are_one_line_and_found_inside_wrappers() -> None:
    gated = "the repository is gated: accept its licence on the Hub and set HF_TOKEN"
    assert load_reason(_gated()) == gated
    try:  # transformers wraps Hub errors in an OSError of its own
        try:
            raise _gated()
        except hub.GatedRepoError as e:
            raise OSError("You are trying to access a gated repo.\nMore lines.") from e
    except OSError as wrapped:
        assert load_reason(wrapped) == gated
    offline = hub.LocalEntryNotFoundError("no cached file")
    assert load_reason(offline) == "not a local folder and not in the Hub cache (offline)"
    assert load_reason(ValueError("bad config\nmore")) == "ValueError: bad config"
