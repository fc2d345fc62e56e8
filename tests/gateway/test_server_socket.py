"""The gateway's connections send small writes at once (TCP_NODELAY): a response goes out in
two writes (headers, then body), and without it the body waits for the client's delayed ACK
(about 40 ms a request on asyncio's loop, which sets the option only on sockets made with
IPPROTO_TCP)."""

from __future__ import annotations

import socket
import time

import httpx

from tests.fixtures.gateway import StartGateway, base_config
from tests.fixtures.sim import RunningSim


def test_connections_have_tcp_nodelay(sim: RunningSim, start_gateway: StartGateway) -> None:
    gw = start_gateway(base_config(sim.url, None))
    server = gw._server
    assert server is not None
    with httpx.Client(base_url=gw.url) as http:
        assert http.get("/healthz").status_code == 200
        (connection,) = server.server_state.connections
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        t0 = time.perf_counter()
        for _ in range(20):
            http.get("/healthz")
        # 20 keep-alive requests: ~0.9 s when each waits for a delayed ACK, ~40 ms otherwise
        assert time.perf_counter() - t0 < 0.6
