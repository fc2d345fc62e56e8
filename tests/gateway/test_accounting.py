"""Per-request accounting, in-process: what a finished request leaves behind (metrics, the
captured event), for whole answers and streams alike."""

from __future__ import annotations

from pathlib import Path

from standby.providers.fake import FakeProvider, Reply
from standby.store import InferenceCompleted, open_bus
from tests.fixtures.fake_gateway import ROUTE, fake_config, fake_gateway


async def stored(db: Path) -> list[InferenceCompleted]:
    async with open_bus(f"sqlite:///{db}") as bus:
        deliveries = await bus.consume("inference.completed", "test-reader", "t", count=1000)
    events = [d.event for d in deliveries]
    assert all(isinstance(e, InferenceCompleted) for e in events)
    return events  # type: ignore[return-value]


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
