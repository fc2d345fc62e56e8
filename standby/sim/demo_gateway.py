"""The demo's gateway on a background thread (the same start-up as ``standby serve``: start the
backends, then uvicorn), so that the demo's story can drive it from the main thread."""

from __future__ import annotations

import uvicorn

from standby.config import Settings
from standby.errors import StandbyError
from standby.gateway.app import Gateway
from standby.gateway.server import run_gateway
from standby.sim.background import BackgroundServer


class GatewayThread(BackgroundServer):
    def __init__(self, settings: Settings, log_level: str = "warning") -> None:
        super().__init__(settings.server.host, settings.server.port)
        self.settings = settings
        self.log_level = log_level
        self._server: uvicorn.Server | None = None

    async def _serve(self) -> None:
        def started(server: uvicorn.Server, gateway: Gateway) -> None:
            self._server = server
            self._ready.set()

        await run_gateway(self.settings, log_level=self.log_level, on_started=started)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def start(self, timeout: float = 120) -> GatewayThread:
        """Start and wait until it serves; a backend that cannot start is its one-line error."""
        try:
            super().start(timeout)
        except RuntimeError as e:
            if isinstance(e.__cause__, StandbyError):
                raise e.__cause__ from None
            raise
        return self
