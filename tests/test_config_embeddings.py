"""Embedding routes in the config: one embedding space per route, checked at load, each
refusal one line naming the route and the backends."""

from __future__ import annotations

from typing import Any

import pytest

from standby.config import parse_settings
from standby.errors import ConfigError


def config(**routes: Any) -> dict[str, Any]:
    return {
        "backends": {
            "chat": {"type": "gemini", "model": "gemini-3-flash-preview"},
            "g1": {
                "type": "gemini",
                "model": "gemini-embedding-001",
                "embeddings": {"space": "gemini-embedding-001", "task_type": "CLUSTERING"},
            },
            "g2": {
                "type": "openai",
                "base_url": "http://127.0.0.1:9/v1beta/openai",
                "model": "gemini-embedding-001",
                "embeddings": {"space": "gemini-embedding-001"},
            },
            "other": {
                "type": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "BAAI/bge-m3",
                "embeddings": {"space": "bge-m3"},
            },
        },
        "routes": {"chat": ["chat"], **routes},
    }


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "standby.yaml")
    message = str(err.value)
    assert "\n" not in message
    return message


def test_one_space_loads() -> None:
    settings = parse_settings(config(embed={"kind": "embeddings", "backends": ["g1", "g2"]}))
    assert settings.routes["embed"].kind == "embeddings"
    assert settings.routes["chat"].kind == "chat"
    assert settings.embedding_space("g2") == "gemini-embedding-001"
    assert settings.embedding_space("chat") is None


def test_mixed_spaces_are_refused() -> None:
    message = refusal(config(embed={"kind": "embeddings", "backends": ["g1", "other"]}))
    assert message == (
        "standby.yaml: routes.embed: mixes embedding spaces (g1: gemini-embedding-001, "
        "other: bge-m3); failover between them would put vectors of two models in one index: "
        "give the route one space"
    )


def test_chat_backend_in_an_embeddings_route_is_refused() -> None:
    message = refusal(config(embed={"kind": "embeddings", "backends": ["g1", "chat"]}))
    assert "routes.embed: kind embeddings needs embedding backends, but 'chat'" in message


@pytest.mark.parametrize("route", [["g1"], {"backends": ["chat", "g1"]}])
def test_embedding_backend_in_a_chat_route_is_refused(route: Any) -> None:
    message = refusal(config(mixed=route))
    assert "routes.mixed: backend 'g1' is an embedding model" in message


def test_task_type_is_gemini_only_and_checked() -> None:
    data = config()
    data["backends"]["g2"]["embeddings"]["task_type"] = "CLUSTERING"
    assert "backends.g2.embeddings.task_type" in refusal(data)
    data = config()
    data["backends"]["g1"]["embeddings"]["task_type"] = "NOPE"
    assert "backends.g1.embeddings.task_type" in refusal(data)
