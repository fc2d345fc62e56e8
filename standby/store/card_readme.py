"""The adapter's ``README.md``, written from its ``standby-model.json`` every time the card is
written (``card.write_card``), so the two never disagree. It is what a Hub push publishes:
Hugging Face's model-card front matter (``library_name``, ``base_model``, ``tags``), then what a
person wants to know — what the adapter is, what it was trained on, how well it did, and how to
serve it. Parts the card does not have yet (a card from the trainer has no judge scores until
the gate passes it) are left out, never filled with placeholders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from standby.store.card import DataRef, ModelCard

README_FILE = "README.md"


def render_readme(card: ModelCard) -> str:
    base = card.base_model.id if card.base_model else None
    title = card.version or "standby adapter"
    parts = [_front_matter(base), f"# {title}\n"]
    kind = card.adapter.format if card.adapter else "peft-lora"
    what = f"A LoRA adapter ({kind}) of `{base}`" if base else "A LoRA adapter"
    parts.append(
        f"{what}, fine-tuned by standby on answers its primary model gave through the gateway, "
        "to answer in its place when the primary fails.\n"
    )
    parts += [s for s in (_data(card), _training(card), _results(card), _serve(card)) if s]
    if card.libraries:
        rows = "".join(f"| {k} | {v} |\n" for k, v in sorted(card.libraries.items()))
        parts.append(f"## Libraries\n\n| library | version |\n|---|---|\n{rows}")
    parts.append(
        "The machine-readable record of all of this is `standby-model.json` beside this file.\n"
    )
    return "\n".join(parts)


def _front_matter(base: str | None) -> str:
    meta: dict[str, Any] = {"library_name": "peft", "tags": ["standby", "lora", "fallback"]}
    if base:
        meta["base_model"] = base
    return f"---\n{yaml.safe_dump(meta, sort_keys=True)}---\n"


def _data_line(name: str, ref: DataRef) -> str:
    where = f"`{ref.source}`, split `{ref.split}`"
    snapshot = f", snapshot `{ref.snapshot_id}`" if ref.snapshot_id else ""
    return (
        f"- {name}: {ref.rows} rows from {where}{snapshot} (content hash "
        f"`{ref.content_hash[:16]}`)\n"
    )


def _data(card: ModelCard) -> str:
    lines = ""
    if card.dataset:
        lines += _data_line("Training", card.dataset)
    if card.eval_dataset:
        lines += _data_line("Evaluation", card.eval_dataset)
    return f"## Data\n\n{lines}" if lines else ""


def _training(card: ModelCard) -> str:
    out = []
    if card.training:
        t = card.training
        took = f" in {t.wall_time_s:.0f} s" if t.wall_time_s is not None else ""
        out.append(f"{t.global_step} steps on {t.device} (world size {t.world_size}){took}.\n")
    if card.metrics:
        m = card.metrics
        losses = [(k, v) for k, v in (("final loss", m.final_loss), ("eval loss", m.eval_loss))]
        said = ", ".join(f"{k} {v:.4f}" for k, v in losses if v is not None)
        if said:
            out.append(f"{said[0].upper()}{said[1:]}.\n")
    if card.hyperparameters:
        rows = "".join(f"| {k} | {v} |\n" for k, v in sorted(card.hyperparameters.items()))
        out.append(f"| hyperparameter | value |\n|---|---|\n{rows}")
    return "## Training\n\n" + "\n".join(out) if out else ""


def _results(card: ModelCard) -> str:
    scores = card.scores.criteria() if card.scores else {}
    if not scores:
        return ""
    rows = "".join(f"| {k} | {v:.1f} |\n" for k, v in scores.items())
    decision = (card.evaluation or {}).get("gate")
    gate = ""
    if isinstance(decision, dict) and "passed" in decision:
        verdict = "passed" if decision["passed"] else "failed"
        reasons = "; ".join(str(r) for r in decision.get("reasons") or ())
        gate = f"\nThe promotion gate {verdict}" + (f": {reasons}.\n" if reasons else ".\n")
    return (
        "## Results\n\nMean judge scores (1-100) against the primary's own answers on the "
        f"held-out split:\n\n| criterion | score |\n|---|---|\n{rows}{gate}"
    )


def _serve(card: ModelCard) -> str:
    if not card.base_model:
        return ""
    config = {
        "backends": {
            "gemma": {
                "type": "local",
                "model": card.base_model.id,
                "adapter": "<this folder or its Hub id>",
            }
        }
    }
    snippet = yaml.safe_dump(config, sort_keys=False)
    return (
        "## Serving it\n\nAs standby's in-process fallback, in `standby.yaml`:\n\n"
        f"```yaml\n{snippet}```\n\nOr with vLLM: `vllm serve {card.base_model.id} "
        "--enable-lora --lora-modules fallback=<this folder>`.\n"
    )
