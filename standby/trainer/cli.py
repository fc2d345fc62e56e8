"""``standby train``: LoRA fine-tuning from ``--from-config config/train.yaml`` and/or flags
(every YAML key is also a flag: ``lora_r`` <-> ``--lora-r``; flags win over the file).

torch, transformers and TRL are imported when the command runs, not when ``standby`` starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from standby.toolconfig import add_tool_command
from standby.trainer.config import TrainConfig


def register_train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``standby train`` to the ``standby`` parser."""
    add_tool_command(
        subparsers,
        "train",
        TrainConfig,
        cmd_train,
        help="LoRA fine-tuning of the fallback Gemma (TRL SFTTrainer + peft)",
        description="Fine-tune a Gemma base model with LoRA on a dataset snapshot; writes the "
        "adapter and standby-model.json to --output-dir.",
        json_help="print the model card as JSON",
    )


def cmd_train(cfg: TrainConfig, args: argparse.Namespace) -> None:
    from standby.trainer.train import train

    # The trainer prints its progress and loss logs on stdout; they go to stderr, so that
    # stdout carries only the result (``--json`` output can be piped).
    with contextlib.redirect_stdout(sys.stderr):
        result = train(cfg)
    card = result.card
    if card is None:  # not the main process of a multi-process run
        return
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
        return
    metrics, training = card.metrics, card.training
    assert metrics is not None and training is not None  # the trainer's card has both
    eval_loss = metrics.eval_loss
    print(
        f"adapter {card.version} in {result.adapter_dir}: "
        f"train loss {metrics.train_loss:.4f}"
        + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else "")
        + f", {training.wall_time_s:.1f}s"
    )
