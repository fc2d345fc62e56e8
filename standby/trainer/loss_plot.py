"""``loss.svg`` beside the adapter: the training loss per logged step and the eval loss where
it was measured, drawn from the model card's ``metrics`` (``standby.plots``), so the picture
and ``standby-model.json`` say the same. It opens in any browser, offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from standby.store.card import ModelCard

log = logging.getLogger("standby.trainer")

LOSS_PLOT = "loss.svg"


def write_loss_plot(directory: Path, card: ModelCard) -> Path | None:
    """Draw the card's loss curves into ``directory/loss.svg`` (atomically); None when the card
    has no losses or matplotlib is missing (a warning: the adapter is saved all the same)."""
    metrics = card.metrics
    if metrics is None or not (metrics.loss_curve or metrics.eval_loss_curve):
        return None
    from standby import plots

    title = f"Loss of {card.version}" if card.version else "Loss"
    try:
        svg = plots.loss_curve(metrics.loss_curve, metrics.eval_loss_curve, title=title)
    except ImportError as e:
        log.warning("loss curve not drawn: %s (pip install 'standby[train]')", e)
        return None
    path = directory / LOSS_PLOT
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(svg, encoding="utf-8")
    os.replace(tmp, path)
    return path
