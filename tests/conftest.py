"""Shared fixtures live in tests/fixtures/ (one module per kind of real server or artefact)."""

import os

# litellm must not try to fetch its cost map from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.sim",
    "tests.fixtures.tiny_model",
    "tests.fixtures.gateway",
    "tests.fixtures.tgi_sim",
    "tests.fixtures.prometheus",
    "tests.fixtures.drill_report",
    "tests.fixtures.secrets",
    "tests.fixtures.vllm_sim",
    "tests.fixtures.ports",
    "tests.fixtures.media",
    "tests.fixtures.hostile_upstream",
    "tests.fixtures.workers",
]
