"""Batch inference: the candidate model answers every instruction of a held-out split.

The model is a base + LoRA adapter (or a full model) served in-process by the gateway's local
provider: prompts rendered by the model's own chat template with the generation prompt, batched
with left padding, each row stopped at its end-of-turn token, and only the new tokens decoded
(never a split of the decoded text on "assistant"). Or it is any backend of a standby.yaml by
name (Gemini, a vLLM or TGI deployment), so the same judge can score those too.

Every finished answer is appended to ``output_dir/progress.jsonl`` at once; a run that dies is
started again with the same command and skips the rows already there. At the end the answers go
to ``output_dir/{lm_response_ds_split}.jsonl`` (readable by ``standby evaluate`` as
``--lm-response-ds-id output_dir``) and, if asked, to a Hub dataset repo.

Rows with tools are asked with their whole context and the tools offered, and their answer rows
keep the calls (``evaluator/tool_use.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from standby.errors import ConfigError, StandbyError, UpstreamError, UpstreamProtocolError
from standby.evaluator.config import BatchInferConfig
from standby.evaluator.tool_use import (
    TOOL_COLUMNS,
    ToolContext,
    answer_record,
    candidate_text,
    tool_context,
)
from standby.protocol import ChatRequest, Completion, Message
from standby.providers.base import Provider, build_provider

log = logging.getLogger("standby.evaluator.batch_inference")

COLUMNS = (
    "instructions",
    "target_responses",
    "candidate_responses",
    "model_id",
    "model_sha",
    "sample_id",
    "repeat_index",
    "latency_s",
    "finish_reason",
)
PROGRESS = "progress.jsonl"
RUN = "run.json"


@dataclass(frozen=True)
class TestRow:
    sample_id: str
    instruction: str
    target: str
    tools: ToolContext | None = None  # a row with tools: its context, tools and target calls


@dataclass
class ModelRef:
    """What answers: a provider, and the names recorded in every row."""

    provider: Provider
    model_id: str
    model_sha: str | None


@dataclass
class BatchInferResult:
    output: Path
    rows: int
    generated: int
    resumed: int
    seconds: float
    completion_tokens: int
    model_id: str
    model_sha: str | None
    pushed: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def read_test_rows(cfg: BatchInferConfig) -> tuple[list[TestRow], str]:
    """The instructions and targets of the test split, and the split's content hash."""
    from standby.data.pairs import DataError
    from standby.data.sources import instruction_and_target, load_split, require_columns

    loaded = load_split(cfg.test_ds_id, cfg.test_ds_split, revision=cfg.test_ds_revision)
    ds = loaded.dataset
    where = f"{cfg.test_ds_id} [{cfg.test_ds_split}]"
    require_columns(ds, ("messages",), where)
    has_id = "prompt_id" in ds.column_names
    has_tools = "tools" in ds.column_names
    rows: list[TestRow] = []
    seen: dict[str, int] = {}
    index = 0
    for batch in ds.iter(batch_size=cfg.batch_infer_data_preprocess_bs):
        ids = batch["prompt_id"] if has_id else [None] * len(batch["messages"])
        tools = batch["tools"] if has_tools else [None] * len(batch["messages"])
        for messages, prompt_id, offered in zip(batch["messages"], ids, tools, strict=True):
            context = None
            try:
                if offered:
                    instruction, target, context = tool_context(messages, offered)
                else:
                    instruction, target = instruction_and_target(messages)
            except (DataError, ValueError, KeyError) as e:
                raise DataError(f"{where}: row {index}: {e}") from None
            sid = str(prompt_id) if prompt_id else _text_id(instruction)
            if sid in seen:  # duplicate ids would collide in the resume log
                seen[sid] += 1
                sid = f"{sid}#{seen[sid]}"
            else:
                seen[sid] = 0
            rows.append(TestRow(sid, instruction, target, context))
            index += 1
            if cfg.max_rows is not None and len(rows) >= cfg.max_rows:
                return rows, loaded.content_hash
    return rows, loaded.content_hash


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_model(cfg: BatchInferConfig) -> ModelRef:
    """The provider for ``--backend`` (from ``--gateway-config``) or the local model; nothing
    is loaded yet."""
    if cfg.backend is not None:
        from standby.config import load_settings

        settings = load_settings(cfg.gateway_config)
        backend = settings.backends.get(cfg.backend)
        if backend is None:
            known = ", ".join(sorted(settings.backends))
            raise ConfigError(
                f"--backend {cfg.backend!r} is not defined in {cfg.gateway_config} ({known})"
            )
        model = getattr(backend, "model", None) or cfg.backend
        return ModelRef(build_provider(cfg.backend, backend), f"{cfg.backend}/{model}", None)
    return _local_model(cfg)


def _local_model(cfg: BatchInferConfig) -> ModelRef:
    from standby.config import LocalBackend

    assert cfg.ft_model_id is not None
    ft, revision = cfg.ft_model_id, cfg.ft_model_revision
    adapter = _adapter_config(ft, revision)
    base = cfg.base_model_id
    if adapter is not None and base is None:
        base = adapter.get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{ft}: its adapter_config.json names no base: give --base-model-id")
    backend: dict[str, Any] = {
        "type": "local",
        "model": base if adapter is not None else ft,
        "revision": cfg.base_model_revision if adapter is not None else revision,
        "adapter": ft if adapter is not None else None,
        "adapter_revision": revision if adapter is not None else None,
        "device": cfg.device,
        "dtype": cfg.dtype,
        "max_batch_size": cfg.inference_bs,
        "max_queue": max(64, 2 * cfg.batch_infer_data_preprocess_bs),
        "max_new_tokens": cfg.max_new_tokens,
        "threads": cfg.threads,
    }
    provider = build_provider("candidate", LocalBackend.model_validate(backend))
    return ModelRef(provider, ft, _model_sha(ft, revision))


def _adapter_config(ref: str, revision: str | None) -> dict[str, Any] | None:
    """The adapter's ``adapter_config.json``, or None when ``ref`` is a full model."""
    path = Path(ref).expanduser()
    if path.is_dir():
        file = path / "adapter_config.json"
        return dict(json.loads(file.read_text(encoding="utf-8"))) if file.is_file() else None
    if ref.startswith((".", "/", "~")):
        raise ConfigError(f"--ft-model-id {ref}: no such directory")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        file = Path(hf_hub_download(ref, "adapter_config.json", revision=revision))
    except EntryNotFoundError:
        return None
    except Exception as e:  # the Hub client's many errors: one line
        raise ConfigError(f"--ft-model-id {ref}: cannot read it from the Hub ({e})") from None
    return dict(json.loads(file.read_text(encoding="utf-8")))


def _model_sha(ref: str, revision: str | None) -> str | None:
    """The Hub commit of a Hub model; for a local folder a hash of its weight and config files
    (``sha256:...``), so two different adapters in one path are never confused."""
    path = Path(ref).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if file.suffix in (".safetensors", ".bin", ".json", ".model") or file.name.startswith(
                "tokenizer"
            ):
                h.update(str(file.relative_to(path)).encode() + b"\0")
                h.update(hashlib.sha256(file.read_bytes()).digest())
        return f"sha256:{h.hexdigest()[:40]}"
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(ref, revision=revision).sha
        return str(sha) if sha else None
    except Exception:  # offline, gated: the revision given is the best name there is
        return revision


def _fingerprint(cfg: BatchInferConfig, model: ModelRef, data_hash: str, n: int) -> dict[str, Any]:
    """What makes two runs the same run (resuming a different one would mix answers)."""
    return {
        "model_id": model.model_id,
        "model_sha": model.model_sha,
        "base_model_id": cfg.base_model_id,
        "test_ds_id": cfg.test_ds_id,
        "test_ds_split": cfg.test_ds_split,
        "test_content_hash": data_hash,
        "rows": n,
        "repeat": cfg.repeat,
        "generation": {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
        },
    }


def _resume(out: Path, fingerprint: dict[str, Any], overwrite: bool) -> dict[tuple[str, int], Any]:
    """The rows a previous run of the same fingerprint finished (a torn last line dropped)."""
    out.mkdir(parents=True, exist_ok=True)
    run_file, progress = out / RUN, out / PROGRESS
    if overwrite:
        for p in (run_file, progress):
            p.unlink(missing_ok=True)
    record: dict[str, Any] = {}
    if run_file.exists():
        record = json.loads(run_file.read_text(encoding="utf-8"))
        if record.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{out} holds answers of a different run (model, data or generation settings "
                "differ): pass --overwrite or another --output-dir"
            )
    _write_json(run_file, {**record, "fingerprint": fingerprint, "status": "running"})
    done: dict[tuple[str, int], Any] = {}
    if not progress.exists():
        return done
    good: list[bytes] = []
    for line in progress.read_bytes().splitlines():
        try:
            row = orjson.loads(line)
            done[(row["sample_id"], int(row["repeat_index"]))] = row
            good.append(line)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line torn by the crash: that row is answered again
    tmp = progress.with_suffix(".tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in good))
    os.replace(tmp, progress)
    return done


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Progress:
    """tqdm on a terminal (rows/s and new tokens/s), a log line per 10% otherwise."""

    def __init__(self, total: int, done: int) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        self.total, self.done, self.tokens = total, done, 0
        self.began = time.perf_counter()
        self.bar = tqdm(total=total, initial=done, unit="row", disable=not sys.stderr.isatty())
        self._next_log = done + max(1, total // 10)

    def update(self, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens
        rate = self.tokens / max(1e-9, time.perf_counter() - self.began)
        self.bar.update(1)
        self.bar.set_postfix(tok_s=f"{rate:.0f}", refresh=False)
        if self.bar.disable and self.done >= self._next_log:
            self._next_log += max(1, self.total // 10)
            log.info("batch-infer: %d/%d rows, %.0f new tokens/s", self.done, self.total, rate)

    def close(self) -> None:
        self.bar.close()


def _work(rows: list[TestRow], repeat: int, done: dict[tuple[str, int], Any]) -> Iterator[Any]:
    # Repeat by repeat: a repeat's rows share a seed, so the local model batches them together.
    for r in range(repeat):
        for row in rows:
            if (row.sample_id, r) not in done:
                yield row, r


async def _generate(
    cfg: BatchInferConfig,
    model: ModelRef,
    rows: list[TestRow],
    done: dict[tuple[str, int], Any],
    progress_file: Path,
) -> tuple[int, int, list[str], float]:
    """Answer every row not done; returns (answers, new tokens, errors, generation seconds:
    model loading left out)."""
    todo = list(_work(rows, cfg.repeat, done))
    if not todo:
        return 0, 0, [], 0.0
    local = cfg.backend is None
    in_flight = asyncio.Semaphore(
        max(cfg.batch_infer_data_preprocess_bs, cfg.inference_bs) if local else cfg.inference_bs
    )
    errors: list[str] = []
    await model.provider.start()
    bar = _Progress(len(rows) * cfg.repeat, len(done))
    try:
        with progress_file.open("ab") as sink:

            async def one(row: TestRow, r: int) -> None:
                request = ChatRequest(
                    messages=row.tools.messages
                    if row.tools
                    else (Message("user", row.instruction),),
                    tools=row.tools.tools if row.tools else (),
                    temperature=cfg.temperature,
                    top_p=cfg.top_p if cfg.temperature > 0 else None,
                    max_tokens=cfg.max_new_tokens,
                    seed=cfg.seed + r,
                )
                async with in_flight:
                    began = time.perf_counter()
                    refused: str | None = None
                    try:
                        answer: Completion | None = await model.provider.complete(request)
                    except UpstreamProtocolError as e:
                        if row.tools is None:
                            errors.append(f"{row.sample_id}: {e}")
                            return
                        answer, refused = None, str(e)  # a bad call: scored as wrong
                    except UpstreamError as e:
                        errors.append(f"{row.sample_id}: {e}")
                        return
                    latency = time.perf_counter() - began
                record = {
                    "instructions": row.instruction,
                    "target_responses": row.target,
                    "candidate_responses": candidate_text(answer) if answer else "",
                    "model_id": model.model_id,
                    "model_sha": model.model_sha or (answer.model_version if answer else None),
                    "sample_id": row.sample_id,
                    "repeat_index": r,
                    "latency_s": round(latency, 4),
                    "finish_reason": answer.finish_reason if answer else "error",
                }
                if row.tools is not None:
                    record |= answer_record(row.tools, answer, refused)
                sink.write(orjson.dumps(record) + b"\n")
                sink.flush()  # one row at a time: a crash loses at most the rows in flight
                bar.update(answer.usage.completion_tokens if answer else 0)

            await asyncio.gather(*(one(row, r) for row, r in todo))
    finally:
        bar.close()
        await model.provider.close()
    return len(todo) - len(errors), bar.tokens, errors, time.perf_counter() - bar.began


def run_batch_inference(cfg: BatchInferConfig) -> BatchInferResult:
    """Run (or resume) batch inference; see the module doc."""
    return asyncio.run(batch_infer(cfg))


async def batch_infer(cfg: BatchInferConfig) -> BatchInferResult:
    """:func:`run_batch_inference` for callers that already run an event loop (the pipeline);
    reading the data and writing the files block it briefly."""
    began = time.perf_counter()
    rows, data_hash = read_test_rows(cfg)
    if not rows:
        raise ConfigError(f"{cfg.test_ds_id} [{cfg.test_ds_split}]: no rows")
    model = open_model(cfg)
    out = cfg.output_dir
    fingerprint = _fingerprint(cfg, model, data_hash, len(rows))
    done = _resume(out, fingerprint, cfg.overwrite)
    resumed = len(done)
    if resumed:
        log.info(
            "batch-infer: resuming, %d of %d answers already in %s",
            resumed,
            len(rows) * cfg.repeat,
            out / PROGRESS,
        )
    generated, tokens, errors, gen_s = await _generate(cfg, model, rows, done, out / PROGRESS)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StandbyError(
            f"{len(errors)} rows got no answer, e.g. {errors[0]}{more}; the others are saved in "
            f"{out / PROGRESS}: run the same command again to retry only the missing rows"
        )
    records = _ordered(out / PROGRESS, rows, cfg.repeat)
    target = out / f"{cfg.lm_response_ds_split}.jsonl"
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for record in records:
            f.write(orjson.dumps(record) + b"\n")
    os.replace(tmp, target)
    seconds = time.perf_counter() - began
    stats = {
        "rows": len(records),
        "generated": generated,
        "resumed": resumed,
        "seconds": round(seconds, 3),
        "generation_s": round(gen_s, 3),
        "completion_tokens": tokens,
    }
    record = json.loads((out / RUN).read_text(encoding="utf-8"))
    record.update(status="complete", stats=stats)
    _write_json(out / RUN, record)
    result = BatchInferResult(
        target,
        len(records),
        generated,
        resumed,
        seconds,
        tokens,
        model.model_id,
        model.model_sha,
        stats=stats,
    )
    if cfg.push_lm_responses_to_hf_hub:
        where = {
            "repo": cfg.lm_response_ds_id,
            "split": cfg.lm_response_ds_split,
            "append": cfg.lm_response_append,
        }
        before = record.get("pushed") or {}
        if generated == 0 and {k: before.get(k) for k in where} == where:
            # These very answers are already there: pushing again would append duplicates.
            result.pushed = before.get("commit_url")
        else:
            result.pushed = await asyncio.to_thread(push_responses, cfg, records)
            record["pushed"] = {**where, "commit_url": result.pushed}
            _write_json(out / RUN, record)
    return result


def _ordered(progress: Path, rows: list[TestRow], repeat: int) -> list[dict[str, Any]]:
    """Every answer once, in test-set order within each repeat."""
    got: dict[tuple[str, int], dict[str, Any]] = {}
    for line in progress.read_bytes().splitlines():
        row = orjson.loads(line)
        got[(row["sample_id"], int(row["repeat_index"]))] = row
    missing = [(r.sample_id, i) for i in range(repeat) for r in rows if (r.sample_id, i) not in got]
    if missing:
        raise StandbyError(f"{progress}: {len(missing)} answers missing, e.g. {missing[0]}")
    columns = (*COLUMNS, *TOOL_COLUMNS)  # the tool columns on rows with tools only
    return [
        {c: row[c] for c in columns if c in row}
        for i in range(repeat)
        for r in rows
        if (row := got[(r.sample_id, i)])
    ]


def push_responses(cfg: BatchInferConfig, records: list[dict[str, Any]]) -> str:
    """Push the answers to ``lm_response_ds_id`` (append or replace the split)."""
    assert cfg.lm_response_ds_id is not None
    return cfg.push_rows(
        records,
        cfg.lm_response_ds_id,
        cfg.lm_response_ds_split,
        append=cfg.lm_response_append,
        about="Answers of a candidate model on a held-out split (standby batch-infer).",
    )
