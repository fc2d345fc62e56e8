"""``standby`` command line: one thin sub-command per tool.

Every failure the user can fix (bad config, missing file, port taken) ends with one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from standby.data.cli import register
from standby.errors import ConfigError, StandbyError
from standby.evaluator.cli import register_evaluator
from standby.pipeline.cli import register_pipeline
from standby.pipeline.models_cli import register_models
from standby.synth.cli import register_synth
from standby.trainer.cli import register_train

DEFAULT_CONFIG = "standby.yaml"


def cmd_serve(args: argparse.Namespace) -> None:
    from standby.config import load_settings

    settings = load_settings(args.config)
    overrides = (("host", args.host), ("port", args.port), ("workers", args.workers))
    server = settings.server.model_copy(update={k: v for k, v in overrides if v is not None})
    settings = settings.model_copy(update={"server": server})
    if server.workers > 1:
        from standby.gateway.workers import serve_workers

        code = serve_workers(
            settings,
            setup_logging=setup_logging,
            log_level=args.log_level,
            config_path=args.config,
        )
        if code:
            raise SystemExit(code)  # the worker said why on stderr
        return
    from standby.gateway.server import serve

    serve(settings, log_level=args.log_level, config_path=args.config)


def cmd_demo(args: argparse.Namespace) -> None:
    from standby.sim.demo import run_demo

    run_demo(
        host=args.host,
        port=args.port,
        sim_port=args.sim_port,
        model_dir=Path(args.model_dir),
        log_level=args.log_level,
        keep_running=args.keep_running,
        serve_only=args.serve_only,
        verbose=args.verbose,
    )


def cmd_sim_gemini(args: argparse.Namespace) -> None:
    from standby.sim.gemini import serve

    serve(args.host, args.port, api_key=args.api_key)


def cmd_sim_tiny_model(args: argparse.Namespace) -> None:
    from standby.sim.tiny_model import build_tiny_gemma

    path = build_tiny_gemma(args.path, seed=args.seed)
    print(path)


def setup_logging(level: str) -> None:
    """Human-readable lines on stderr; the access log as bare JSON lines (one per request)."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    access = logging.getLogger("standby.access")
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers = [handler]  # called again (main() twice in one process): still one line
    access.propagate = False


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is now, not the one at set-up (which a caller,
    e.g. a test capturing output, may have replaced and closed since)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="standby",
        description="OpenAI-compatible gateway: Gemini primary, a local Gemma as the fallback.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("STANDBY_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config",
        "--from-config",
        dest="config",
        default=DEFAULT_CONFIG,
        help=f"YAML config file (default: {DEFAULT_CONFIG})",
    )
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--workers",
        type=_positive,
        help="override server.workers: processes serving the port (default 1)",
    )
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo",
        help="offline simulation of the whole loop: traffic, Gemini outage, failover to the "
        "tiny local Gemma, retrain, judge (simulated: chrF), gate, promote; a one-step "
        "candidate the gate rejects; then a summary",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (0: any free one)")
    demo.add_argument(
        "--sim-port", type=int, default=8090, help="simulated Gemini port (0: any free one)"
    )
    demo.add_argument("--model-dir", default=".standby/tiny-gemma")
    mode = demo.add_mutually_exclusive_group()
    mode.add_argument(
        "--keep-running",
        action="store_true",
        help="after the story, keep the gateway up until Ctrl-C",
    )
    mode.add_argument(
        "--serve-only",
        action="store_true",
        help="skip the story: serve gateway and simulator until Ctrl-C",
    )
    demo.add_argument(
        "--verbose", action="store_true", help="also show the gateway, pipeline and library logs"
    )
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("sim", help="simulation kit (tests, demo, failover drills)")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    gem = sim_sub.add_parser("gemini", help="run the simulated Gemini REST server")
    gem.add_argument("--host", default="127.0.0.1")
    gem.add_argument("--port", type=int, default=8090)
    gem.add_argument("--api-key", default=None, help="require this key (default: any)")
    gem.set_defaults(func=cmd_sim_gemini)
    tiny = sim_sub.add_parser("tiny-model", help="build a tiny random-weight Gemma in PATH")
    tiny.add_argument("path")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_sim_tiny_model)

    register(sub)
    register_train(sub)
    register_synth(sub)
    register_evaluator(sub)
    register_models(sub)
    register_pipeline(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging(args.log_level)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ConfigError, StandbyError) as e:
        print(f"standby: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # port taken, unreadable file...
        where = f": {e.filename}" if e.filename else ""
        print(f"standby: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
