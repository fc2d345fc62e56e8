"""Several choices and failover, in-process with fake backends: a backend that answers fewer
choices than asked for has failed (the next one is tried), never a short answer."""

from __future__ import annotations

from standby.providers.fake import FakeProvider, Reply
from tests.fixtures.fake_gateway import HELLO, fake_gateway


async def test_fewer_choices_than_asked_for_is_a_backend_failure() -> None:
    # The fakes answer one choice whatever n is: each of them fails the request.
    primary, fallback = FakeProvider("primary", Reply("one")), FakeProvider("fallback", Reply("x"))
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(messages=HELLO, n=2)
    assert answer.status == 503
    message = answer.body["error"]["message"]
    # Read as a stream (failover.complete): it ended after the finish of choice 0 only.
    assert "primary: UpstreamProtocolError (stream ended without a finish)" in message
    assert "fallback: UpstreamProtocolError (stream ended without a finish)" in message
    assert len(primary.requests) == len(fallback.requests) == 1
