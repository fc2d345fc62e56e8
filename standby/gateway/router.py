"""Moved: failover is ``standby.gateway.failover``, per-request accounting
``standby.gateway.accounting``. Kept only for ``Outcome``'s one remaining importer
(``gateway/capture.py``); delete once it imports ``standby.gateway.failover``."""

from standby.gateway.failover import Outcome

__all__ = ["Outcome"]
