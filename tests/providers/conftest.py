"""Fixtures of the provider tests: providers started for one test and closed after it, and one
torch thread for the tests that generate on the tiny local models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from standby.providers.base import Provider
from tests.fixtures.providers import P, Start


@pytest.fixture
async def started() -> AsyncIterator[Start]:
    """``await started(provider)``: ``provider``, started; each one is closed after the test."""
    providers: list[Provider] = []

    async def start(provider: P) -> P:
        await provider.start()
        providers.append(provider)
        return provider

    yield start
    for provider in providers:
        await provider.close()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """A hidden-64 model gains nothing from intra-op threads, and on a busy 2-core machine
    their spin-waiting makes generation 5x slower (``pytest.mark.usefixtures`` it)."""
    import torch  # only the local-model tests pay for it

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
