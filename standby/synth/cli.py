"""``standby synth``: a thin wrapper; every YAML key of ``--from-config`` is also a flag (flags
win). The heavy imports (datasets, the providers) happen when the command runs."""

from __future__ import annotations

import argparse
import json

from standby.synth.config import SynthConfig
from standby.toolconfig import add_tool_command


def register_synth(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``synth`` to the ``standby`` parser."""
    add_tool_command(
        subparsers,
        "synth",
        SynthConfig,
        cmd_synth,
        help="generate new training pairs with the service LLM (dedup, decontaminated)",
        description="Grow the training set: the service LLM writes new pairs from seed rows "
        "(or from the worst rows of an evaluation), then invalid items, duplicates and "
        "anything near a test prompt are removed; rows carry their provenance.",
        json_help="print the summary as JSON",
    )


def cmd_synth(cfg: SynthConfig, args: argparse.Namespace) -> None:
    from standby.synth.run import run_synth

    summary = run_synth(cfg)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(summary.one_line())
