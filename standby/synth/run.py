"""``standby synth`` from settings to saved rows: seeds -> plan -> generate -> validate ->
decontaminate -> dedup -> judge (optional) -> save (+ push) -> event -> summary."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from standby.data.pairs import DataError, timestamp
from standby.data.sources import instruction_and_target, load_split
from standby.service_llm import ServiceLLM
from standby.synth.config import SynthConfig
from standby.synth.decontaminate import Decontaminator
from standby.synth.dedup import Deduplicator
from standby.synth.generate import Generated, generate
from standby.synth.output import (
    publish_snapshot,
    push,
    read_rows,
    row_of,
    write_rows,
)
from standby.synth.sampling import Seed, plan_requests, seeds_of
from standby.synth.summary import Summary
from standby.synth.targeted import worst_seeds
from standby.synth.validate import Item

log = logging.getLogger("standby.synth")


def new_run_id(now: datetime) -> str:
    return f"synth-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _prompts(source: str, split: str, revision: str | None = None) -> Iterator[str]:
    """The instructions of a split (first user message; the ``prompt`` column as a fallback)."""
    ds = load_split(source, split, revision=revision).dataset
    for row in ds:
        messages, prompt = row.get("messages"), row.get("prompt")
        if messages:
            try:
                yield instruction_and_target(messages)[0]
                continue
            except DataError:
                pass
        if isinstance(prompt, str) and prompt:
            yield prompt


def test_prompts(cfg: SynthConfig) -> list[str]:
    """Every held-out prompt no synthetic item may be near: the test splits of the reference
    dataset (those it has) and of every ``test_ds_ids`` source (which must have them). A
    single file is one split: named in ``test_ds_ids`` it is a test set; as the reference, it
    has no test split."""
    prompts: list[str] = []
    for source in [cfg.reference_ds_id, *cfg.test_ds_ids]:
        explicit = source in cfg.test_ds_ids
        if Path(source).expanduser().is_file():
            if explicit:
                prompts += _prompts(source, "test")
            continue
        for split in cfg.test_ds_splits:
            try:
                prompts += _prompts(source, split)
            except DataError as e:
                if explicit:
                    raise
                log.warning("no held-out split to decontaminate against: %s", e)
    return prompts


def _seeds(cfg: SynthConfig, reference: list[Seed]) -> list[Seed]:
    if cfg.from_evaluation is None:
        return reference
    return worst_seeds(cfg.from_evaluation, cfg.worst_rows)


def run_synth(cfg: SynthConfig) -> Summary:
    """Generate, filter and save new pairs; see the module doc."""
    began = time.monotonic()
    now = datetime.now(UTC)
    run_id = new_run_id(now)
    ref = load_split(
        cfg.reference_ds_id, cfg.reference_ds_split, revision=cfg.reference_ds_revision
    )
    reference = seeds_of(ref)
    seeds = _seeds(cfg, reference)
    held_out = test_prompts(cfg)
    if cfg.from_evaluation is not None:  # the evaluated rows are held-out rows themselves
        held_out += [s.instruction for s in seeds]
    out_file = cfg.output_dir / f"{cfg.synth_ds_split}.jsonl"
    earlier = read_rows(out_file) if cfg.synth_ds_append else []

    dedup = Deduplicator(cfg.dedup_threshold, cfg.dedup_ngram)
    dedup.remember(s.instruction for s in reference)
    dedup.remember(str(r.get("prompt", "")) for r in earlier)
    decontam = Decontaminator(held_out, cfg.decontam_threshold, cfg.decontam_ngram)

    requests = math.ceil(cfg.num_samples / cfg.items_per_request)
    plan = plan_requests(seeds, requests, cfg.seeds_per_request, cfg.seed)
    llm = ServiceLLM(cfg, concurrency=cfg.gen_workers)
    summary = Summary(
        run_id,
        cfg.mode,
        llm.model_id,
        cfg.num_samples,
        requests=requests,
        seeds=len(seeds),
        targeted=cfg.from_evaluation is not None,
        reference_rows=len(reference),
        test_prompts=len(decontam),
    )

    def select(items: list[Item]) -> list[Item]:
        return _select(items, decontam, dedup, summary)

    kept = asyncio.run(_with_llm(llm, cfg, plan, summary, select))
    summary.cost = llm.stats.as_dict()
    summary.kept = len(kept)

    created_at = timestamp(now)
    rows = [
        row_of(
            i,
            generator=summary.generator,
            topic=cfg.topic,
            created_at=created_at,
            run_id=run_id,
            mode=cfg.mode,
        )
        for i in kept
    ]
    write_rows(out_file, [*earlier, *rows])
    summary.output = str(out_file)
    summary.rows_in_output, summary.content_hash = _saved(cfg)
    if cfg.push_synth_ds_to_hf_hub and cfg.synth_ds_id:
        summary.pushed = push(
            rows,
            cfg.synth_ds_id,
            cfg.synth_ds_split,
            append=cfg.synth_ds_append,
            private=cfg.hub_private,
            endpoint=cfg.hub_endpoint,
        )
    summary.seconds = time.monotonic() - began
    if cfg.bus:
        asyncio.run(publish_snapshot(cfg.bus, _event_data(summary, cfg)))
    (cfg.output_dir / "summary.json").write_bytes(_json(summary))
    return summary


def _saved(cfg: SynthConfig) -> tuple[int, str]:
    """Rows in the output split and their content hash, read back as a consumer reads them."""
    saved = load_split(str(cfg.output_dir), cfg.synth_ds_split)
    return saved.rows, saved.content_hash


def _event_data(summary: Summary, cfg: SynthConfig) -> dict[str, object]:
    """The pair store's snapshot event shape (id, content hash, counts) plus where and how."""
    return {
        "snapshot_id": summary.run_id,
        "content_hash": summary.content_hash,
        "counts": {
            cfg.synth_ds_split: summary.rows_in_output,
            "total": summary.rows_in_output,
            "new": summary.kept,
        },
        "dataset": str(cfg.output_dir.resolve()),
        "source": "synthetic",
        "run_id": summary.run_id,
        "added": summary.kept,
        "generator": summary.generator,
        "pushed": summary.pushed,
    }


def _json(summary: Summary) -> bytes:
    import orjson

    return orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2)


def _select(
    items: list[Item], decontam: Decontaminator, dedup: Deduplicator, summary: Summary
) -> list[Item]:
    """The items neither near a test prompt nor repeating an earlier one, in order."""
    kept: list[Item] = []
    for item in items:
        hit = decontam.match(item.instruction)
        if hit is not None:
            summary.contaminated[hit.how] += 1
            log.info(
                "contaminated (%s %.2f): %r ~ %r",
                hit.how,
                hit.score,
                item.instruction,
                hit.test_prompt,
            )
            continue
        repeat = dedup.offer(item.instruction)
        if repeat is not None:
            summary.duplicates[repeat] += 1
            continue
        kept.append(item)
    return kept


async def _with_llm(
    llm: ServiceLLM,
    cfg: SynthConfig,
    plan: list[tuple[Seed, ...]],
    summary: Summary,
    select: Callable[[list[Item]], list[Item]],
) -> list[Item]:
    """Generate, select, and judge when asked: one event loop and one client for all calls."""
    async with llm:
        generated = await _generate(llm, cfg, plan, summary.targeted)
        summary.generated = generated.returned
        summary.invalid = generated.invalid
        summary.failed_requests = generated.failed_requests
        kept = select(generated.items)
        if not cfg.judge_filter or not kept:
            return kept
        from standby.synth.judge import judge_items

        judged = await judge_items(llm, kept, cfg.judge_threshold, cfg.judge_prompt_tmpl_path)
        summary.judge = f"precision >= {cfg.judge_threshold:g}"
        summary.judged_out, summary.judge_failed = judged.out, judged.failed
        summary.judge_scores = dict(judged.scores)
        return judged.kept


async def _generate(
    llm: ServiceLLM, cfg: SynthConfig, plan: list[tuple[Seed, ...]], targeted: bool
) -> Generated:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    bar = tqdm(
        total=len(plan),
        unit="request",
        desc="synth",
        leave=False,
        disable=None if cfg.progress else True,
        file=sys.stderr,
    )
    kept = 0

    def done(n: int) -> None:
        nonlocal kept
        kept += n
        bar.update(1)
        bar.set_postfix(valid=kept, refresh=False)

    try:
        return await generate(llm, cfg, plan, targeted=targeted, on_done=done)
    finally:
        bar.close()
