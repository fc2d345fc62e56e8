"""Judge throughput is bounded by the rate limit, not by the code: ``standby evaluate`` against
the simulated Gemini at ``--rpm`` (default 600) takes about rows x repeats / (rpm / 60) seconds.

    .venv/bin/python benchmarks/judge_rate.py                       # 50 rows x 3 repeats, 600 rpm
    .venv/bin/python benchmarks/judge_rate.py --rows 100 --latency-ms 0,800

For each judge latency (the simulator's ``slow-<ms>`` fault, to stand in for Gemini's own time
per call) it runs a full evaluation (judge, metrics, report; no cache) and prints the expected
time, the measured time and the calls made. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import orjson

from standby.evaluator.config import EvaluateConfig
from standby.evaluator.evaluate import run_evaluation
from standby.sim.background import AiohttpServer
from standby.sim.gemini import SimGemini, build_app


def write_answers(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        orjson.dumps(
            {
                "instructions": f"Explain item {i} in one sentence.",
                "target_responses": f"Item {i} is a blue box that holds small parts.",
                "candidate_responses": f"Item {i} is a box for parts.",
                "model_id": "bench",
                "model_sha": None,
                "sample_id": f"b{i:05d}",
                "repeat_index": 0,
                "latency_s": 0.0,
                "finish_reason": "stop",
            }
        )
        for i in range(rows)
    ]
    (folder / "batch_infer.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--latency-ms", default="0,500", help="comma-separated judge latencies")
    args = ap.parse_args()

    sim = SimGemini()
    server = AiohttpServer(build_app(sim))
    server.start()
    calls = args.rows * args.repeats
    expected = (calls - 1) * 60 / args.rpm
    print(f"# {platform.platform()}, python {platform.python_version()}")
    print(
        f"# {args.rows} rows x {args.repeats} repeats = {calls} judge calls at {args.rpm} rpm, "
        f"{args.workers} workers"
    )
    print(
        "| judge latency | expected (s) | measured (s) | measured / expected | calls | "
        "sim requests | judgements/s |"
    )
    print("|---|---|---|---|---|---|---|")
    try:
        with tempfile.TemporaryDirectory(prefix="standby-judge-bench-") as tmp:
            answers = write_answers(Path(tmp) / "answers", args.rows)
            # Warm up once (imports, the metrics libraries) so every row measures the same work.
            run_evaluation(
                EvaluateConfig(
                    service_llm_base_url=server.url,
                    lm_response_ds_id=str(write_answers(Path(tmp) / "warm", 1)),
                    eval_repeat=1,
                    cache_path=None,
                    output_dir=Path(tmp) / "warm-eval",
                    gate=False,
                )
            )
            for latency in (int(x) for x in args.latency_ms.split(",")):
                sim.reset()
                sim.set_fault(f"slow-{latency}" if latency else "ok")
                cfg = EvaluateConfig(
                    service_llm_base_url=server.url,
                    service_llm_api_key="bench",
                    rate_limit_per_minute=args.rpm,
                    lm_response_ds_id=str(answers),
                    eval_repeat=args.repeats,
                    eval_workers=args.workers,
                    cache_path=None,
                    output_dir=Path(tmp) / f"eval-{latency}",
                    gate=False,
                )
                began = time.perf_counter()
                report = run_evaluation(cfg).data
                took = time.perf_counter() - began
                want = expected + latency / 1000
                print(
                    f"| {latency} ms | {want:.1f} | {took:.1f} | {took / want:.3f} | "
                    f"{report['cost']['calls']} | {sim.stats()['requests']} | "
                    f"{calls / took:.2f} |"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
