"""Fixtures of the simulator tests: a google-genai client of the simulated Gemini."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google import genai
from google.genai import types

from tests.fixtures.sim import RunningSim


def genai_client(url: str, key: str = "test-key") -> genai.Client:
    """A google-genai client of the simulated Gemini at ``url``."""
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=url, api_version="v1beta")
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shared_client(gemini_sim: RunningSim) -> AsyncIterator[genai.Client]:
    # Building a client costs ~0.4 s (TLS contexts), so one serves the whole module.
    c = genai_client(gemini_sim.url)
    yield c
    c.close()
    await c.aio.aclose()


@pytest.fixture
def client(sim: RunningSim, shared_client: genai.Client) -> genai.Client:
    """The module's client, of the session simulator reset for this test."""
    return shared_client
