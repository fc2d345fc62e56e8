"""Fetching image URLs on the client's behalf, before any backend is called.

A client may send an ``image_url`` part with an ``http(s)`` URL instead of a ``data:`` URL, as
OpenAI allows; backends only ever get bytes, so the gateway fetches it. That is a request the
gateway makes for whoever can reach it (server-side request forgery, SSRF), so each fetch:

- takes only ``http`` and ``https``;
- resolves the host first (``getaddrinfo``) and refuses it when any of its addresses is
  loopback, private, link-local, shared (CGNAT), multicast, reserved, unspecified, an IPv4
  address in IPv6 form (mapped, 6to4, Teredo, NAT64) of such an address, or a cloud metadata
  address, unless the host is in ``media.allow_hosts``;
- connects only to the addresses it checked: the session's resolver answers from that check
  alone, so a DNS answer that changes between the check and the connection (rebinding) is
  never used; no proxy from the environment is used either;
- follows at most ``MAX_REDIRECTS`` redirects, each target checked like the first URL;
- stops reading at ``media.max_bytes`` and gives up after ``media.timeout_s`` (the whole
  fetch: resolving, connecting, redirects, body);
- accepts only an image type Gemini reads (``standby.media.MIME_TYPES``), by the response's
  ``Content-Type``.

Each refusal is a 400 naming the part (``messages.0.content.1: ...``) and the reason. The URLs
of one request are fetched ``CONCURRENCY`` at a time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from standby.config import MediaConfig
from standby.errors import RequestError
from standby.media import MIME_TYPES, Media
from standby.protocol import ChatRequest, Message
from standby.providers.embedder import gather_all

MAX_REDIRECTS = 3
CONCURRENCY = 4
_CHUNK = 64 << 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: AWS, GCP, Azure, OCI, DigitalOcean (169.254.169.254), AWS ECS
# task metadata (169.254.170.2), Alibaba Cloud (100.100.100.200), AWS over IPv6
# (fd00:ec2::254). All are non-public anyway; named so the refusal says what they are.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """A URL the gateway will not fetch; the message ends the sentence "the URL ..."."""


def address_problem(ip: IP) -> str | None:
    """Why the gateway must not connect to ``ip`` (None: a public address)."""
    if ip in METADATA:
        return f"resolves to {ip}, a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.ipv4_mapped is not None:
            return f"resolves to {ip}, an IPv4-mapped address"
        if inner is not None and (problem := address_problem(inner)) is not None:
            return f"resolves to {ip}, which embeds an address that {problem}"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    for hit, what in checks:
        if hit:
            return f"resolves to {ip}, {what}"
    return None


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for fetches: it answers only with addresses already checked
    (``pin``), so the connection goes where the check said, whatever DNS says later."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, int], list[ResolveResult]] = {}

    def pin(self, host: str, port: int, infos: list[ResolveResult]) -> None:
        self._pins[(host, port)] = infos

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = self._pins.get((host, port))
        if not infos:
            raise OSError(f"{host} was not checked before connecting")
        return infos

    async def close(self) -> None:
        return None


class MediaFetcher:
    """Fetches the ``http(s)`` image URLs of a request (``fetch``) under ``MediaConfig``."""

    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self._allowed = frozenset(config.allow_hosts)

    async def fetch(self, request: ChatRequest) -> ChatRequest:
        """``request`` with every URL's image replaced by its bytes; a RequestError naming the
        part when one cannot be fetched."""
        todo = [
            (i, j, part)
            for i, m in enumerate(request.messages)
            for j, part in enumerate(m.parts)
            if isinstance(part, Media) and not part.fetched
        ]
        if not todo:
            return request
        if not self.config.fetch_urls:
            i, j, _ = todo[0]
            raise _part_error(
                i,
                j,
                "is not fetched by this gateway (media.fetch_urls is false): send the "
                "image inline as a data: URL",
            )
        if len(todo) > self.config.max_urls:
            raise RequestError(
                f"messages: {len(todo)} image URLs, over media.max_urls "
                f"({self.config.max_urls}); send the others inline as data: URLs",
                param="messages",
                code="invalid_image_url",
            )
        resolver = PinnedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=CONCURRENCY)
        gate = asyncio.Semaphore(CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

            async def one(i: int, j: int, media: Media) -> Media:
                async with gate:
                    try:
                        async with asyncio.timeout(self.config.timeout_s):
                            return await self._get(session, resolver, media)
                    except Refused as e:
                        raise _part_error(i, j, str(e)) from None
                    except TimeoutError:
                        why = f"was not fetched within {self.config.timeout_s:g}s (media.timeout_s)"
                        raise _part_error(i, j, why) from None
                    except (aiohttp.ClientError, OSError) as e:
                        raise _part_error(i, j, f"could not be fetched: {_said(e)}") from None
                    except ValueError as e:  # a URL yarl cannot read (here or in a redirect)
                        raise _part_error(i, j, f"is not a usable URL ({e})") from None

            # The first refusal answers the request: the other fetches are cancelled.
            fetched = await gather_all([one(i, j, m) for i, j, m in todo])
        return _with_media(request, {(i, j): m for (i, j, _), m in zip(todo, fetched, strict=True)})

    async def _get(
        self, session: aiohttp.ClientSession, resolver: PinnedResolver, media: Media
    ) -> Media:
        assert media.url is not None
        url = URL(media.url)
        for _ in range(MAX_REDIRECTS + 1):
            await self._check(resolver, url)
            async with session.get(
                url, allow_redirects=False, headers={"accept": "image/*"}
            ) as resp:
                if resp.status in _REDIRECTS and "location" in resp.headers:
                    url = url.join(URL(resp.headers["location"]))
                    continue
                if resp.status != 200:
                    raise Refused(f"answered HTTP {resp.status}")
                mime = resp.content_type.lower()
                if mime not in MIME_TYPES["image"]:
                    accepted = ", ".join(sorted(MIME_TYPES["image"]))
                    raise Refused(f"answered with type {mime!r}; an image is one of {accepted}")
                data = await self._body(resp)
            return replace(media, mime_type=mime, data=data, url=None)
        raise Refused(f"redirected more than {MAX_REDIRECTS} times")

    async def _body(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.config.max_bytes
        over = f"is over media.max_bytes ({cap} bytes)"
        if resp.content_length is not None and resp.content_length > cap:
            raise Refused(over)
        data = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            data += chunk
            if len(data) > cap:
                raise Refused(over)
        return bytes(data)

    async def _check(self, resolver: PinnedResolver, url: URL) -> None:
        """Refuse ``url`` unless it is http(s) to a host whose every address may be fetched;
        pin those addresses for the connection."""
        if url.scheme not in ("http", "https"):
            raise Refused(f"has scheme {url.scheme!r}; only http and https are fetched")
        host, port = url.raw_host, url.port
        if not host or port is None:
            raise Refused("has no host")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as e:
            raise Refused(f"has a host that does not resolve ({_said(e)})") from None
        allowed = host.strip("[]").lower() in self._allowed
        pinned: list[ResolveResult] = []
        for family, _, proto, _, sockaddr in infos:
            address = str(sockaddr[0]).split("%")[0]
            if not allowed and (problem := address_problem(ipaddress.ip_address(address))):
                raise Refused(f"{problem} (not fetched unless media.allow_hosts names the host)")
            pinned.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=family,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        resolver.pin(host, port, pinned)


def _said(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _part_error(i: int, j: int, problem: str) -> RequestError:
    where = f"messages.{i}.content.{j}"
    return RequestError(
        f"{where}: the image_url part's URL {problem}", param=where, code="invalid_image_url"
    )


def _with_media(request: ChatRequest, fetched: dict[tuple[int, int], Media]) -> ChatRequest:
    messages: list[Message] = []
    for i, m in enumerate(request.messages):
        if any(i == k[0] for k in fetched):
            parts: tuple[Any, ...] = tuple(fetched.get((i, j), p) for j, p in enumerate(m.parts))
            m = replace(m, parts=parts)
        messages.append(m)
    return replace(request, messages=tuple(messages))
