"""Redaction throughput over realistic captured answers: ``Redactor.many([prompt, response])``,
what the capture writer runs per answer.

    .venv/bin/python benchmarks/redaction.py                     # standby/redaction.py
    git show <commit>:standby/redaction.py > /tmp/old.py          # a version to compare with
    .venv/bin/python benchmarks/redaction.py --against /tmp/old.py

Then the configured-secret scrubber (``standby.scrub.Scrubber``) with ``--secrets`` keys of
40 characters: its cost on an access-log line (what the log record factory adds to a request)
and on an encoded captured event of 2.8 KB (what the capture writer adds to an answer).

The answers are generated (seeded): 60 % prose without digits, 20 % prose with years, prices
and counts, 15 % code, 5 % with an e-mail address or a phone number. It prints microseconds per
answer and MB/s per mix: the best of ``--rounds`` rounds, the versions taking turns in each
round, so that both meet the same load on a shared machine. Not a test: the numbers depend on
the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import random
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

PROSE = (
    "the model answers a question about how a request is routed when the primary backend "
    "fails and the gateway sends it to the local fallback which continues the stream from "
    "where it was cut so that the client sees one answer with one id and the operator sees "
    "a metric for every reason a backend was skipped while training data is captured after "
    "redaction and written to the bus in batches by a separate process"
)
WORDS = PROSE.split()
CODE = '''def handle(request: Request) -> Response:
    """Route a chat request to its first healthy backend."""
    for backend in self.route(request.model):
        if not backend.ready():
            continue
        try:
            return await backend.complete(request, timeout=self.timeouts.total_s)
        except UpstreamError as e:
            log.warning("backend %s failed: %s", backend.name, e)
    raise AllBackendsFailed(request.model, errors)
'''
PII = (
    "Please write to jane.doe@example.com about the order.",
    "Call me on +44 20 7946 0958 after lunch.",
)


def prose(rng: random.Random, words: int, numbers: bool) -> str:
    out = []
    for i in range(words):
        out.append(rng.choice(WORDS))
        if numbers and i % 17 == 5:
            out.append(rng.choice(("in 2024", "for $1,299.99", "3 times", "at 12:30", "v2.1")))
        if i % 13 == 12:
            out[-1] += "."
    return " ".join(out).capitalize() + "."


def answers(n: int, seed: int = 0) -> dict[str, list[list[str]]]:
    rng = random.Random(seed)
    mixes: dict[str, list[list[str]]] = {"prose": [], "numbers": [], "code": [], "pii": []}
    for _ in range(n):
        mixes["prose"].append([prose(rng, 40, False), prose(rng, 160, False)])
        mixes["numbers"].append([prose(rng, 40, True), prose(rng, 160, True)])
        mixes["code"].append([prose(rng, 20, False) + "\n" + CODE, prose(rng, 60, False)])
        mixes["pii"].append([rng.choice(PII) + " " + prose(rng, 30, False), prose(rng, 120, False)])
    return mixes


WEIGHTS = {"prose": 0.60, "numbers": 0.20, "code": 0.15, "pii": 0.05}


def load(module: Path | None) -> Any:
    if module is None:
        import standby.redaction

        return standby.redaction
    spec = importlib.util.spec_from_file_location("redaction_under_test", module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def time_per_answer(many: Callable[[list[str]], list[str]], texts: list[list[str]]) -> float:
    start = time.perf_counter()
    for pair in texts:
        many(pair)
    return (time.perf_counter() - start) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--against", type=Path, help="another redaction.py, measured in the same rounds"
    )
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--secrets", type=int, default=4, help="configured secrets to scrub")
    args = parser.parse_args()
    versions = {"standby/redaction.py": load(None).Redactor()}
    if args.against is not None:
        versions[str(args.against)] = load(args.against).Redactor()
    mixes = answers(args.answers)
    best = {(v, m): float("inf") for v in versions for m in mixes}
    for _ in range(args.rounds):  # the versions take turns, so both see the same machine
        for name, texts in mixes.items():
            for version, redactor in versions.items():
                us = time_per_answer(redactor.many, texts) * 1e6
                best[version, name] = min(best[version, name], us)
    print(f"python {platform.python_version()}, best of {args.rounds} rounds")
    for version in versions:
        print(version)
        weighted = 0.0
        for name, texts in mixes.items():
            us = best[version, name]
            chars = sum(len(a) + len(b) for a, b in texts) / len(texts)
            weighted += WEIGHTS[name] * us
            print(
                f"  {name:8} {chars:5.0f} chars/answer {us:7.2f} us/answer {chars / us:6.1f} MB/s"
            )
        print(f"  weighted mix (60/20/15/5): {weighted:.2f} us/answer")
    scrubber_cost(args.secrets, args.rounds)


ACCESS_LINE = (
    '{"ts":"2026-01-01T00:00:00.000+00:00","request_id":"5f0c2b7e9d3a41c6b8e2f1a0d9c8b7a6",'
    '"route":"gemini-3.8-flash","backend":"gemini","provenance":"primary","fallback_reason":null,'
    '"errors":null,"status":200,"outcome":"ok","stream":false,"latency_ms":123.4,"ttft_ms":50.1,'
    '"tokens_in":12,"tokens_out":40,"key_id":"1f2e3d4c5b6a7980"}'
)


def scrubber_cost(count: int, rounds: int) -> None:
    from standby.scrub import Scrubber

    rng = random.Random(1)
    keys = ["".join(rng.choices("abcdef0123456789", k=40)) for _ in range(count)]
    scrub = Scrubber(keys)
    pair = answers(1)["prose"][0]
    event = orjson.dumps({"messages": [{"role": "user", "content": pair[0]}], "response": pair[1]})
    event = (event * (2800 // len(event) + 1))[:2800]
    line_us = min(timeit.repeat(lambda: scrub(ACCESS_LINE), number=2000, repeat=rounds)) / 2000
    event_us = min(timeit.repeat(lambda: scrub.json(event), number=500, repeat=rounds)) / 500
    print(f"scrubber, {count} configured secrets ({len(scrub.needles)} encodings searched):")
    print(f"  access-log line ({len(ACCESS_LINE)} chars): {line_us * 1e6:.2f} us")
    print(f"  encoded event ({len(event)} bytes): {event_us * 1e6:.2f} us")


if __name__ == "__main__":
    main()
