"""``standby models deploy-command VERSION --server tgi|vllm``: the exact command that puts a
registered version into service on a model server the gateway cannot switch by itself.

- TGI loads LoRA adapters only at start (``--lora-adapters NAME=PATH``): serving a new version
  means restarting TGI with it. Printed: a ``docker run`` of TGI with the version's adapter
  folder mounted, and, with ``--compose``, the two commands that point the compose stack's
  ``/adapters/current`` at it and restart the ``tgi`` service (deploy/compose.yaml).
- vLLM: the ``curl`` that loads it at runtime (``/v1/load_lora_adapter``), for a vLLM no gateway
  follows the registry for (gateways with ``registry.follow`` do this themselves).

The adapter name stays ``--name`` (default ``standby``, the gateway's ``model``) for TGI, so
the gateway's config does not change; vLLM gets the version as the name, as the gateway does.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from standby.config import RegistryConfig
from standby.errors import ConfigError
from standby.store.registry import ModelVersion

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"
DEFAULT_BASE = "google/gemma-3-1b-it"
COMPOSE = "docker compose -f deploy/compose.yaml --profile tgi"


def add_parser(
    sub: argparse._SubParsersAction[Any],
    where: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], None],
) -> None:
    cmd = sub.add_parser(
        "deploy-command", help="print the command that serves VERSION on TGI (restart) or vLLM"
    )
    where(cmd)
    cmd.add_argument("version")
    cmd.add_argument("--server", choices=["tgi", "vllm"], required=True)
    cmd.add_argument(
        "--name",
        default="standby",
        help="TGI: the adapter name requests use (the gateway backend's model)",
    )
    cmd.add_argument(
        "--adapter-path",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="rewrite the registered adapter path's start FROM into the path the "
        "server sees (as registry.adapter_paths)",
    )
    cmd.add_argument(
        "--compose",
        action="store_true",
        help="TGI: the commands for deploy/compose.yaml instead of docker run",
    )
    cmd.add_argument("--image", default=TGI_IMAGE, help="TGI image")
    cmd.add_argument("--port", type=int, default=8081, help="TGI: host port (127.0.0.1)")
    cmd.add_argument(
        "--url", default="http://127.0.0.1:8000", help="vLLM: the server's URL (without /v1)"
    )
    cmd.set_defaults(func=run)


def _paths(pairs: list[str]) -> RegistryConfig:
    mapping: dict[str, str] = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise ConfigError(f"--adapter-path {pair!r}: expected FROM=TO")
        mapping[src] = dst
    return RegistryConfig(adapter_paths=mapping)


def command(version: ModelVersion, args: argparse.Namespace) -> str:
    """The command(s) to print for ``version``."""
    if version.adapter_revision is not None:
        raise ConfigError(
            f"{version.version}: registered with a Hub revision; TGI and vLLM "
            "load local adapter folders here: register the downloaded folder"
        )
    path = _paths(args.adapter_path).served_path(version.adapter)
    if args.server == "vllm":
        body = json.dumps({"lora_name": version.version, "lora_path": path})
        url = f"{args.url.rstrip('/')}/v1/load_lora_adapter"
        return (
            f"# vLLM (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): load {version.version}, then "
            f"send model={version.version}\n"
            f"curl -fsS -X POST {shlex.quote(url)} -H 'content-type: application/json' "
            f"-d {shlex.quote(body)}"
        )
    if not PurePosixPath(path).is_absolute():
        raise ConfigError(f"{version.version}: adapter {path!r} is not a folder path")
    base = version.base_model or DEFAULT_BASE
    if args.compose:
        return (
            f"# TGI loads adapters only at start: point /adapters/current at "
            f"{version.version} and restart tgi\n"
            f"{COMPOSE} exec pipeline ln -sfn {shlex.quote(path)} /adapters/current \\\n"
            f"  && {COMPOSE} restart tgi"
        )
    inside = f"/adapters/{version.version}"
    lines = [
        f"# TGI loads adapters only at start: (re)start it with {version.version} as {args.name!r}",
        f"docker rm -f standby-tgi 2>/dev/null; docker run -d --name standby-tgi --gpus all "
        f"--shm-size 1g -p 127.0.0.1:{args.port}:80 -e HF_TOKEN -v standby-hf-cache:/data \\",
        f"  -v {shlex.quote(f'{path}:{inside}:ro')} \\",
        f"  {args.image} \\",
        f"  --model-id {shlex.quote(base)} --lora-adapters {shlex.quote(f'{args.name}={inside}')}",
    ]
    return "\n".join(lines)
