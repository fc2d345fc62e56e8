"""The gateway's image URL fetcher (``standby.gateway.fetch``) through a real gateway and the
openai SDK: what it refuses (loopback, private, link-local, metadata and other non-public
addresses, names that resolve to them, redirects to them, other schemes, non-image types,
oversized and slow bodies), each a 400 naming the part, and what it fetches once the host is
allowed. The image server is a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from standby.config import parse_settings
from standby.gateway.fetch import PinnedResolver, address_problem
from standby.sim.background import AiohttpServer
from tests.fixtures.gateway import ROUTE, GatewayServer, base_config
from tests.fixtures.media import HITS, PNG
from tests.fixtures.media import b64 as _b64
from tests.fixtures.sim import RunningSim


def _gateway(sim_url: str, **media: Any) -> Iterator[GatewayServer]:
    config = base_config(sim_url, None)
    config["media"] = media
    server = GatewayServer(parse_settings(config, "test"))
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(gemini_sim: RunningSim) -> Iterator[GatewayServer]:
    """Default media settings: only public addresses are fetched."""
    yield from _gateway(gemini_sim.url)


@pytest.fixture(scope="module")
def allowing(gemini_sim: RunningSim) -> Iterator[GatewayServer]:
    """127.0.0.1 allowed; 1 KiB and half a second per image."""
    yield from _gateway(gemini_sim.url, allow_hosts=["127.0.0.1"], max_bytes=1024, timeout_s=0.5)


def ask(gw: GatewayServer, *urls: str) -> openai.types.chat.ChatCompletion:
    content: list[Any] = [{"type": "text", "text": "What is in the picture?"}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return gw.client().chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": content}]
    )


def refused(gw: GatewayServer, sim: RunningSim, *urls: str) -> str:
    """The 400's message for a request with ``urls``; Gemini was never called."""
    before = sim.sim.requests
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, *urls)
    assert sim.sim.requests == before
    assert e.value.code == "invalid_image_url"
    assert e.value.param == f"messages.0.content.{len(urls)}"
    return said(e.value)


def said(error: openai.APIStatusError) -> str:
    """The message of an OpenAI error body (the SDK's ``message`` adds a prefix)."""
    assert isinstance(error.body, dict)
    message = error.body["message"]
    assert isinstance(message, str)
    return message


def test_a_server_on_loopback_is_refused(
    strict: GatewayServer, gemini_sim: RunningSim, image_server: AiohttpServer
) -> None:
    message = refused(strict, gemini_sim, f"{image_server.url}/cat.png")
    assert message.startswith("messages.0.content.1: the image_url part's URL resolves to ")
    assert "127.0.0.1, a loopback address" in message and "media.allow_hosts" in message


def test_a_name_that_resolves_to_loopback_is_refused(
    strict: GatewayServer, gemini_sim: RunningSim, image_server: AiohttpServer
) -> None:
    message = refused(strict, gemini_sim, f"http://localhost:{image_server.port}/cat.png")
    assert "a loopback address" in message


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("10.0.0.1", "a private address"),
        ("192.168.1.10", "a private address"),
        ("172.16.5.4", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("0.0.0.0", "an unspecified address"),
        ("[::1]", "a loopback address"),
        ("[::ffff:127.0.0.1]", "an IPv4-mapped address"),
        ("[fd00:ec2::254]", "a cloud metadata address"),
        ("[fe80::1]", "a link-local address"),
        ("2130706433", "a loopback address"),  # 127.0.0.1 as one number
    ],
)
def test_non_public_literal_addresses_are_refused(
    strict: GatewayServer, gemini_sim: RunningSim, host: str, reason: str
) -> None:
    assert reason in refused(strict, gemini_sim, f"http://{host}/x.png")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.2.1", "a private address"),  # TEST-NET-1, documentation only
        ("100.100.100.200", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("2002:7f00:1::", "embeds an address that resolves to 127.0.0.1"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "embeds an address that resolves to 10.0.0.1"),  # NAT64 of 10.0.0.1
        ("::", "an unspecified address"),
    ],
)
def test_every_non_public_range_has_a_reason(address: str, reason: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and reason in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_an_allowed_host_is_fetched(
    allowing: GatewayServer, gemini_sim: RunningSim, image_server: AiohttpServer
) -> None:
    answer = ask(allowing, f"{image_server.url}/cat.png", f"{image_server.url}/hop")
    assert answer.choices[0].finish_reason == "stop"
    parts = orjson.loads(gemini_sim.sim.received[-1])["contents"][0]["parts"]
    blobs = [p["inlineData"] for p in parts if "inlineData" in p]
    assert len(blobs) == 2  # the second came through a redirect on the same allowed host
    assert all(b == {"mimeType": "image/png", "data": _b64(PNG)} for b in blobs)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/page.html", "answered with type 'text/html'; an image is one of image/gif"),
        ("/big.png", "is over media.max_bytes (1024 bytes)"),
        ("/chunked.png", "is over media.max_bytes (1024 bytes)"),
        ("/slow.png", "was not fetched within 0.5s (media.timeout_s)"),
        ("/missing.png", "answered HTTP 404"),
        ("/to-private", "resolves to 10.1.2.3, a private address"),
        ("/to-metadata", "resolves to 169.254.169.254, a cloud metadata address"),
        ("/to-localhost", "a loopback address"),  # localhost is not the allowed 127.0.0.1
        ("/loop", "redirected more than 3 times"),
        ("/to-bad-port", "is not a usable URL"),  # was a 500: yarl's ValueError
    ],
)
def test_what_an_allowed_host_answers_is_still_checked(
    allowing: GatewayServer,
    gemini_sim: RunningSim,
    image_server: AiohttpServer,
    path: str,
    reason: str,
) -> None:
    message = refused(allowing, gemini_sim, f"{image_server.url}{path}")
    assert message.startswith("messages.0.content.1: the image_url part's URL ")
    assert reason in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/cat.png", "must be a data: URL or an http(s) URL"),
        ("file:///etc/passwd", "must be a data: URL or an http(s) URL"),
        ("data:image/png;base64,@@@", "is not valid base64"),
        ("data:text/html;base64,PGI+", "has type 'text/html'; a image must be one of"),
        ("data:image/png,rawbytes", "must be base64-encoded"),
    ],
)
def test_urls_that_are_not_fetched_at_all(
    strict: GatewayServer, gemini_sim: RunningSim, url: str, problem: str
) -> None:
    before = gemini_sim.sim.requests
    with pytest.raises(openai.BadRequestError) as e:
        ask(strict, url)
    assert gemini_sim.sim.requests == before
    assert e.value.param == "messages.0.content.1"
    assert said(e.value).startswith("messages.0.content.1: the image_url part ")
    assert problem in said(e.value)


def test_media_on_a_non_user_message_is_refused(strict: GatewayServer) -> None:
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(PNG)}"}}
    messages: Any = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}, image]},
        {"role": "user", "content": "Hi"},
    ]
    with pytest.raises(openai.BadRequestError) as e:
        strict.client().chat.completions.create(model=ROUTE, messages=messages)
    assert said(e.value).startswith("messages.0")
    assert "only user messages may carry image_url parts" in said(e.value)


def test_fetching_can_be_turned_off(gemini_sim: RunningSim) -> None:
    for gw in _gateway(gemini_sim.url, fetch_urls=False):
        with pytest.raises(openai.BadRequestError) as e:
            ask(gw, "https://example.com/cat.png")
        assert "media.fetch_urls is false" in said(e.value)
        assert said(e.value).startswith("messages.0.content.1: ")


@pytest.mark.parametrize(
    ("part", "problem"),
    [
        (
            {"type": "input_audio", "input_audio": {"data": "not base64!", "format": "wav"}},
            "the input_audio part is not valid base64",
        ),
        (
            {"type": "file", "file": {"file_data": "data:application/zip;base64,UEsDBA=="}},
            "the file part has type 'application/zip'",
        ),
        (
            {"type": "file", "file": {"file_data": _b64(b"GIF89a")}},
            "the file part is not a PDF",
        ),
        (
            {"type": "file", "file": {"file_id": "file-abc"}},
            "the file part needs file_data",
        ),
    ],
    ids=["audio-base64", "file-type", "file-not-pdf", "file-id"],
)
def test_unreadable_audio_and_files(
    strict: GatewayServer, gemini_sim: RunningSim, part: dict[str, Any], problem: str
) -> None:
    before = gemini_sim.sim.requests
    with pytest.raises(openai.BadRequestError) as e:
        strict.client().chat.completions.create(
            model=ROUTE,
            messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, part]}],
        )
    assert gemini_sim.sim.requests == before
    assert e.value.param == "messages.0.content.1"
    assert said(e.value).startswith(f"messages.0.content.1: {problem}")


def test_an_allowed_name_is_fetched_through_the_checked_addresses(
    gemini_sim: RunningSim, image_server: AiohttpServer
) -> None:
    """``localhost`` allowed: fetched (the HTTP client's resolver knows only what the check
    pinned, so a name reached at all was reached through it); its address, written as an IP,
    is another host and still refused (the list is exact)."""
    for gw in _gateway(gemini_sim.url, allow_hosts=["localhost"]):
        assert ask(gw, f"http://localhost:{image_server.port}/cat.png").choices
        blob = orjson.loads(gemini_sim.sim.received[-1])["contents"][0]["parts"][1]["inlineData"]
        assert blob == {"mimeType": "image/png", "data": _b64(PNG)}
        assert "a loopback address" in refused(gw, gemini_sim, f"{image_server.url}/cat.png")


async def test_the_resolver_answers_only_what_was_checked() -> None:
    resolver = PinnedResolver()
    with pytest.raises(OSError, match="was not checked"):
        await resolver.resolve("example.com", 443)


def test_an_unreadable_url_is_a_400_not_a_500(
    allowing: GatewayServer, gemini_sim: RunningSim
) -> None:
    message = refused(allowing, gemini_sim, "http://[::1/cat.png")
    assert "is not a usable URL" in message


def test_nothing_is_fetched_for_a_route_that_reads_no_images(
    gemini_sim: RunningSim, image_server: AiohttpServer
) -> None:
    """A route whose backends are text-only answers 400 ``unsupported`` without fetching."""
    config = base_config(gemini_sim.url, None)
    config["backends"]["gemini"] = {
        "type": "openai",
        "base_url": f"{gemini_sim.url}/v1beta/openai",
        "model": "gemini-2.5-flash",
        "api_key": "sim-key",
    }
    config["media"] = {"allow_hosts": ["127.0.0.1"]}
    server = GatewayServer(parse_settings(config, "test"))
    server.start(timeout=60)
    try:
        with pytest.raises(openai.BadRequestError) as e:
            ask(server, f"{image_server.url}/counted.png")
    finally:
        server.stop()
    assert e.value.code == "unsupported" and e.value.param == "messages"
    assert image_server.app[HITS] == []
