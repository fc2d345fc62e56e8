"""How long a supervisor waits before starting again a process that died: the workers of
``standby serve --workers N`` (``workers``), the host's capture writer (``capture_host``, and a
worker's own writer in ``capture``) and the model process of a ``local`` backend
(``model_host``). Longer for each death in a row, so a process that cannot run is not started in
a tight loop; from the first delay again after a process that ran ``STEADY_S``."""

from __future__ import annotations

RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STEADY_S = 60.0  # a process that ran (served) this long before it died starts the delays over


def delay_of(attempt: int) -> float:
    """The delay before restart number ``attempt`` (0: the first) in a row."""
    return RESTART_DELAYS_S[min(attempt, len(RESTART_DELAYS_S) - 1)]


class RestartDelays:
    """One process slot's deaths in a row and the delay each earns."""

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures = 0  # deaths (or failed starts) in a row

    def after(self, ran_s: float | None) -> float:
        """The delay after a death; ``ran_s``: how long the process ran, None when it never
        served (a start that failed, a model that died loading)."""
        if ran_s is not None and ran_s >= STEADY_S:
            self.failures = 0
        delay = delay_of(self.failures)
        self.failures += 1
        return delay
