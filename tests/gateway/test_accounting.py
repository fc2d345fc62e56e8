"""Per-request accounting, in-process: what a finished request leaves behind (metrics, the
captured event), for whole answers and streams alike."""

from __future__ import annotations

from pathlib import Path

from standby.errors import UpstreamStatusError
from standby.providers.fake import FakeProvider, Reply
from tests.fixtures.captured import stored
from tests.fixtures.fake_gateway import ROUTE, fake_config, fake_gateway

P, F = "primary", "fallback"
REQUESTS = "standby_requests_total"


def capturing(config: dict[str, object], db: Path) -> dict[str, object]:
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    return config


async def test_model_version_is_captured_for_whole_answers_and_streams(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    fake = FakeProvider("gemma", default=Reply("An ", "answer."), model_version="adapter@v7")
    async with fake_gateway(fake, config=capturing(fake_config("gemma"), db)) as gw:
        whole, streamed = await gw.ask(), await gw.ask(stream=True)
        assert whole.text == streamed.text == "An answer."
        assert gw.metric("standby_tokens_total", backend="gemma", type="output") == 2 * 2
    events = await stored(db)
    assert [(e.data.stream, e.data.model_version) for e in events] == [
        (False, "adapter@v7"),
        (True, "adapter@v7"),
    ]


async def test_a_stream_from_the_local_backend_records_its_model_version(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    config = capturing(fake_config("gemma"), db)
    config["backends"] = {
        "gemma": {"type": "local", "model": str(tiny_model_dir), "max_new_tokens": 4, "threads": 1}
    }
    async with fake_gateway(config=config) as gw:
        streamed = await gw.ask(stream=True)
        whole = await gw.ask()
    assert streamed.done and whole.status == 200
    events = await stored(db)
    assert [(e.data.route, e.data.stream) for e in events] == [(ROUTE, True), (ROUTE, False)]
    assert {e.data.model_version for e in events} == {str(tiny_model_dir)}


async def test_a_rescued_request_is_attributed_to_the_backend_that_answered() -> None:
    primary = FakeProvider(P, Reply("Fine."), UpstreamStatusError(P, 503, "down"))
    async with fake_gateway(primary, FakeProvider(F, default=Reply("Rescued."))) as gw:
        labels = {"route": ROUTE, "from_backend": P, "to_backend": F, "reason": "server_error"}
        # Every expected series exists at zero before the first request (visible to rate()).
        assert gw.sample("standby_fallbacks_total", **labels) == 0.0
        assert (await gw.ask()).headers["x-standby-backend"] == P
        assert (await gw.ask()).headers["x-standby-backend"] == F
        assert gw.metric(REQUESTS, route=ROUTE, backend=P, outcome="ok") == 1
        assert gw.metric(REQUESTS, route=ROUTE, backend=F, outcome="ok") == 1
        assert gw.metric(REQUESTS, route=ROUTE, backend=P, outcome="error") == 0
        assert gw.metric("standby_fallbacks_total", **labels) == 1
        assert gw.metric("standby_upstream_errors_total", backend=P, reason="server_error") == 1
        assert gw.metric("standby_request_duration_seconds_count", route=ROUTE, backend=F) == 1
        assert gw.metric("standby_tokens_total", backend=P, type="output") == 1
        assert gw.metric("standby_in_flight_requests", route=ROUTE) == 0


async def test_all_failed_and_client_errors_have_their_outcomes() -> None:
    async with fake_gateway(FakeProvider(P, default=UpstreamStatusError(P, 503, "down"))) as gw:
        assert (await gw.ask()).status == 503
        invalid = await gw.http.post("/v1/chat/completions", json={"model": ROUTE, "messages": []})
        assert invalid.status_code == 400
        assert gw.metric(REQUESTS, route=ROUTE, backend="none", outcome="error") == 1
        assert gw.metric(REQUESTS, route="none", backend="none", outcome="client_error") == 1
