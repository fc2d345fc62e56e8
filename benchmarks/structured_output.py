"""Structured output's cost on the local backend: tokens/s with and without constraints.

    .venv/bin/python benchmarks/structured_output.py                # both tiny Gemmas, CPU
    .venv/bin/python benchmarks/structured_output.py --requests 24 --concurrency 1 4

The same prompts go through ``LocalProvider`` (the real generation path: the worker thread,
batching, the grammar per row) as plain text, as ``json_object`` and as ``json_schema`` (a
nested object with an enum, an integer range and an array), sampled at temperature 1 with a
seed per request; ``--concurrency`` requests are in flight at once (the worker batches them).
Tokens/s counts the completion tokens of every answer over the wall time of the run (the best
of ``--repeat`` runs, as the machine may be busy with other work); the
constrained answers are also parsed and validated with ``jsonschema`` (those cut by
``--max-tokens`` excepted). Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import torch

from standby.config import LocalBackend
from standby.protocol import ChatRequest, Completion, Message
from standby.providers.local import LocalProvider
from standby.sim.tiny_model import build_tiny_gemma

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no", "maybe"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "source": {
            "type": "object",
            "properties": {"title": {"type": "string", "maxLength": 16}},
            "required": ["title"],
            "additionalProperties": False,
        },
    },
    "required": ["answer", "confidence", "tags", "source"],
    "additionalProperties": False,
}
FORMATS: dict[str, dict[str, Any] | None] = {
    "text": None,
    "json_object": {"type": "json_object"},
    "json_schema": {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}},
}
PROMPTS = ("Is the sky blue?", "Name a city by the sea.", "What is two plus two?")


async def run(
    provider: LocalProvider, fmt: str, n: int, concurrency: int, max_tokens: int, repeat: int = 1
) -> str:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Completion:
        request = ChatRequest(
            messages=(Message("user", PROMPTS[i % len(PROMPTS)]),),
            temperature=1.0,
            seed=i,
            max_tokens=max_tokens,
            response_format=FORMATS[fmt],
        )
        async with gate:
            return await provider.complete(request)

    seconds = float("inf")
    for _ in range(repeat):  # the same seeds each time: the best run is the least disturbed
        began = time.perf_counter()
        answers = await asyncio.gather(*(one(i) for i in range(n)))
        seconds = min(seconds, time.perf_counter() - began)
    tokens = sum(a.usage.completion_tokens for a in answers)
    line = f"{fmt:12} c={concurrency}: {tokens / seconds:6.0f} tokens/s ({tokens} tokens)"
    if fmt != "text":
        done = [a for a in answers if a.finish_reason == "stop"]
        schema = SCHEMA if fmt == "json_schema" else {"type": "object"}
        valid = 0
        for a in done:
            try:
                jsonschema.validate(json.loads(a.text), schema)
                valid += 1
            except (ValueError, jsonschema.ValidationError):
                pass
        line += f", finished {len(done)}/{n}, valid {valid}/{len(done)}"
    return line


async def bench(path: Path, args: argparse.Namespace) -> None:
    provider = LocalProvider(
        "bench",
        LocalBackend(
            type="local",
            model=str(path),
            device="cpu",
            max_new_tokens=args.max_tokens,
            max_batch_size=max(args.concurrency),
            max_queue=args.requests,
        ),
    )
    await provider.start()
    try:
        await run(provider, "json_schema", 2, 1, 16)  # warm-up
        for concurrency in args.concurrency:
            for fmt in FORMATS:
                line = await run(
                    provider, fmt, args.requests, concurrency, args.max_tokens, args.repeat
                )
                print("  " + line)
    finally:
        await provider.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12, help="requests per format")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), {args.requests} requests per format, "
        f"max_tokens {args.max_tokens}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("gemma3_text", "gemma4"):
            print(arch)
            path = build_tiny_gemma(Path(tmp) / arch, seed=0, arch=arch)
            asyncio.run(bench(path, args))


if __name__ == "__main__":
    main()
