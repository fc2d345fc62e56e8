"""The one map from a config backend ``type`` to its provider class."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from standby.config import BACKEND_TYPES, parse_settings
from standby.providers.base import PROVIDERS, Provider, build_provider, provider_class

EXAMPLES: dict[str, dict[str, Any]] = {
    "gemini": {"model": "gemini-2.5-flash", "api_key": "k"},
    "openai": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
    "tgi": {"base_url": "http://127.0.0.1:9"},
    "litellm": {"model": "openai/m"},
    "local": {"model": "google/gemma-3-1b-it"},
}


def test_every_backend_type_has_exactly_one_provider() -> None:
    assert set(PROVIDERS) == BACKEND_TYPES == set(EXAMPLES)


@pytest.mark.parametrize("kind", sorted(BACKEND_TYPES))
def test_each_type_builds_a_provider_of_its_class(kind: str) -> None:
    cls = provider_class(kind)
    assert inspect.isclass(cls)
    settings = parse_settings(
        {"backends": {"b": {"type": kind, **EXAMPLES[kind]}}, "routes": {"r": {"backends": ["b"]}}}
    )
    provider = build_provider("b", settings.backends["b"])  # nothing is started or loaded
    assert type(provider) is cls
    assert isinstance(provider, Provider)
    assert provider.name == "b"
