"""``run_synth`` against the simulated Gemini over HTTP: valid output with provenance, malformed
items among good ones, 429 bursts, duplicates and near-duplicates, decontamination, targeted
mode, determinism, the snapshot event and the local append/replace."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from standby.config import DataConfig
from standby.data.pairs import PairStore
from standby.data.sources import load_split
from standby.store import open_bus
from standby.synth.run import run_synth
from tests.data import candidate
from tests.fixtures.sim import RunningSim
from tests.synth.conftest import (
    TEST,
    TRAIN,
    items,
    new_item,
    read_rows,
    script_each_seed,
    settings,
    write_jsonl,
)

PROVENANCE = ("source", "generator", "seed_ids", "seed_prompt", "topic", "created_at", "run_id")


def one_item_per_seed(sim: RunningSim) -> dict[str, tuple[str, str]]:
    made = {seed: new_item(i) for i, seed in enumerate(TRAIN)}
    script_each_seed(sim, {seed: items(pair) for seed, pair in made.items()})
    return made


async def snapshot_events(url: str) -> list[dict[str, object]]:
    async with open_bus(url) as bus:
        got = await bus.consume("dataset.snapshot_created", "pipeline", "p1")
    return [dict(d.event.data) for d in got]


def test_valid_output_with_provenance_event_and_summary(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    made = one_item_per_seed(sim)
    bus = f"sqlite:///{tmp_path / 'events.db'}"
    cfg = settings(sim, reference, tmp_path / "out", topic="everyday life", bus=bus)
    summary = run_synth(cfg)

    rows = read_rows(tmp_path / "out" / "train_sft.jsonl")
    assert len(rows) == len(TRAIN) == summary.kept
    by_seed = {r["seed_prompt"]: r for r in rows}
    assert set(by_seed) == set(TRAIN)  # every seed used exactly once: no replacement
    for seed, (instruction, response) in made.items():
        row = by_seed[seed]
        assert row["messages"] == [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": response},
        ]
        assert row["prompt"] == instruction and row["category"] == "Generation"
        assert row["seed_ids"] == [f"train-{TRAIN.index(seed)}"]
        assert (row["source"], row["topic"]) == ("synthetic", "everyday life")
        assert row["generator"] == "gemini/gemini-3.8-flash"  # the default service model
        assert row["run_id"] == summary.run_id
        assert all(row[k] not in (None, "", []) for k in PROVENANCE)
    assert sim.sim.stats()["script_pending"] == 0

    d = summary.as_dict()
    assert (d["requested"], d["generated"], d["kept"]) == (8, 8, 8)
    assert (d["invalid"], d["duplicates"], d["contaminated"], d["judged_out"]) == (0, 0, 0, 0)
    assert d["calls"] == 8 and d["tokens"] > 0
    assert d["test_prompts"] == len(TEST)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["kept"] == 8 and saved["run_id"] == summary.run_id

    loaded = load_split(str(tmp_path / "out"), "train_sft")
    assert loaded.content_hash == summary.content_hash
    (event,) = asyncio.run(snapshot_events(bus))
    assert event["snapshot_id"] == summary.run_id
    assert event["content_hash"] == loaded.content_hash
    assert event["counts"] == {"train_sft": 8, "total": 8, "new": 8}
    assert event["source"] == "synthetic" and event["added"] == 8


def test_malformed_items_are_skipped_and_counted(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    good = [new_item(i) for i in range(8)]
    answers = {seed: items(good[i]) for i, seed in enumerate(TRAIN)}
    # One answer mixes good items with bad ones...
    answers[TRAIN[0]] = json.dumps(
        {
            "items": [
                {"instruction": good[0][0], "response": good[0][1]},
                {"instruction": "", "response": "an answer to nothing"},
                {"instruction": "Too short", "response": "fine"},
                {"instruction": "Where is the answer to this request?"},
                {"instruction": "What is the tallest tree species?", "response": "   "},
                "just a string",
                {"instruction": 42, "response": "a number is no instruction"},
                {"instruction": new_item(8)[0], "response": new_item(8)[1]},
            ]
        }
    )
    # ...and one never becomes JSON (the re-ask gets the same), so the request fails.
    answers[TRAIN[1]] = "Sure! Here are some ideas: {items: [oops"
    script_each_seed(sim, answers)
    sim.sim.script(["still {not json"], match=TRAIN[1])
    summary = run_synth(settings(sim, reference, tmp_path / "out"))

    d = summary.as_dict()
    assert d["failed_requests"] == 1
    assert d["invalid_by_reason"] == {
        "empty instruction": 1,
        "instruction too short": 1,
        "no response": 1,
        "empty response": 1,
        "not an object": 1,
        "no instruction": 1,
    }
    assert d["generated"] == 8 + 6  # items in usable answers: the mixed 8 + six one-item ones
    assert d["kept"] == 2 + 6
    assert d["cost"]["malformed"] == 2 and d["cost"]["json_failed"] == 1
    kept = {r["prompt"] for r in read_rows(tmp_path / "out" / "train_sft.jsonl")}
    assert good[0][0] in kept and new_item(8)[0] in kept and good[1][0] not in kept


def test_a_429_burst_is_ridden_out_honouring_retry_after(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    sim.sim.script([{"fault": "error-429-retry-1"}] * 4)
    one_item_per_seed(sim)
    began = time.monotonic()
    summary = run_synth(settings(sim, reference, tmp_path / "out"))
    took = time.monotonic() - began
    d = summary.as_dict()
    assert d["kept"] == 8 and d["failed_requests"] == 0
    assert d["cost"]["rate_limited"] == 4 and d["cost"]["retries"] == 4
    assert d["calls"] == 12
    assert took >= 1.0  # backoff is 10 ms: only Retry-After explains a second's wait


def test_duplicates_and_near_duplicates_are_removed(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    first = "Why do volcanoes erupt, and can scientists predict when?"
    answers = {seed: items(new_item(i + 1)) for i, seed in enumerate(TRAIN)}
    answers[TRAIN[0]] = items((first, "Pressure builds..."))
    answers[TRAIN[1]] = items(
        ("why do VOLCANOES  erupt, and can scientists predict when? ", "Same.")
    )
    answers[TRAIN[2]] = items(("Why do volcanoes erupt, and can scientists predict it?", "Near."))
    # A near-copy of a reference row, and a duplicate inside one answer:
    answers[TRAIN[3]] = items(
        ("Write a limerick about a cat that loves to sail.", "There once was a cat..."),
        (new_item(4)[0], "x"),
        (new_item(4)[0], "y"),
    )
    script_each_seed(sim, answers)
    summary = run_synth(settings(sim, reference, tmp_path / "out", gen_workers=1))

    prompts = [r["prompt"] for r in read_rows(tmp_path / "out" / "train_sft.jsonl")]
    volcano = [p for p in prompts if "volcano" in p.lower()]
    assert len(volcano) == 1
    assert "Write a limerick about a cat that loves to sail." not in prompts
    assert prompts.count(new_item(4)[0]) == 1
    d = summary.as_dict()
    # Which volcano variant comes first (and so which kind the others are) follows the plan.
    assert d["duplicates"] == 4 and d["duplicates_by_kind"]["exact"] >= 1
    assert d["duplicates_by_kind"]["near"] >= 2
    assert d["kept"] == len(prompts) == d["generated"] - 4


def test_items_near_a_test_prompt_are_removed(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    answers = {seed: items(new_item(i)) for i, seed in enumerate(TRAIN)}
    paraphrase = "Compose a haiku about the autumn leaves that fall in a park."
    quoted = (
        "I am preparing a biology lesson for teenagers next week and need material for it: "
        f"{TEST[1]} Keep the explanation short and add one historical example."
    )
    answers[TRAIN[0]] = items((paraphrase, "Leaves drift down..."))
    answers[TRAIN[1]] = items((TEST[2].upper(), "Bonjour... Buenos días..."))
    answers[TRAIN[2]] = items((quoted, "Vaccines show the body..."))
    script_each_seed(sim, answers)
    summary = run_synth(settings(sim, reference, tmp_path / "out"))

    prompts = {r["prompt"] for r in read_rows(tmp_path / "out" / "train_sft.jsonl")}
    assert not prompts & {paraphrase, TEST[2].upper(), quoted}
    d = summary.as_dict()
    assert d["contaminated_by_kind"] == {"exact": 1, "overlap": 1, "paraphrase": 1}
    assert d["kept"] == 5


def test_decontaminates_against_every_named_test_split(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    other = write_jsonl(
        tmp_path / "other_test.jsonl",
        [{"prompt": "Why do volcanoes erupt and can anyone predict it?", "messages": []}],
    )
    one_item_per_seed(sim)  # TRAIN[0]'s item is "Why do volcanoes erupt, ..."
    summary = run_synth(settings(sim, reference, tmp_path / "out", test_ds_ids=[str(other)]))
    assert summary.as_dict()["contaminated"] == 1 and summary.test_prompts == len(TEST) + 1


def eval_rows(folder: Path, scores: dict[str, float]) -> Path:
    """An evaluation as ``standby evaluate`` writes it: eval rows and a report naming them."""
    rows = [
        {
            "instructions": prompt,
            "target_responses": f"The target answer to: {prompt}",
            "candidate_responses": "a weak answer",
            "similarity": score,
            "precision": score + 2,
            "similarity_scores": [score],
            "precision_scores": [score + 2],
        }
        for prompt, score in scores.items()
    ]
    rows.append(
        {
            "instructions": "Unscored row",
            "target_responses": "t",
            "similarity": None,
            "precision": None,
        }
    )
    rows_file = write_jsonl(folder / "eval.jsonl", rows)
    report = {"source": {"eval_rows": str(rows_file)}, "rows": len(rows), "worst": []}
    (folder / "report.json").write_text(json.dumps(report))
    return folder / "report.json"


def test_targeted_mode_seeds_from_the_lowest_scoring_rows(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    worst = ["Explain recursion with a real-world example.", "Plan a budget for a student."]
    scores = {worst[0]: 12.0, worst[1]: 30.0, TEST[0]: 95.0, TEST[1]: 70.0, TEST[2]: 88.0}
    report = eval_rows(tmp_path / "evaluation", scores)
    script_each_seed(
        sim,
        {
            worst[0]: items(new_item(0), ("Explain recursion using a real world example.", "...")),
            worst[1]: items(new_item(1)),
        },
    )
    cfg = settings(
        sim,
        reference,
        tmp_path / "out",
        from_evaluation=str(report),
        worst_rows=2,
        num_samples=4,
        items_per_request=2,
    )
    summary = run_synth(cfg)

    rows = read_rows(tmp_path / "out" / "train_sft.jsonl")
    assert {r["seed_prompt"] for r in rows} == set(worst)
    assert {r["prompt"] for r in rows} == {new_item(0)[0], new_item(1)[0]}
    d = summary.as_dict()
    assert d["targeted"] and d["seeds"] == 2
    # The evaluated rows are held out: a paraphrase of one is contamination.
    assert d["contaminated"] == 1
    assert sim.sim.stats()["script_pending"] == 0


def run_twice(
    sim: RunningSim, reference: Path, tmp_path: Path, name: str, seed: int
) -> list[dict[str, object]]:
    for i, s in enumerate(TRAIN):
        pair = new_item(i)
        sim.sim.script([json.dumps({"items": [{"instruction": pair[0]}]})], match=s)
    cfg = settings(
        sim,
        reference,
        tmp_path / name,
        seed=seed,
        mode="two-stage",
        num_samples=5,
        seeds_per_request=1,
    )
    run_synth(cfg)
    sim.sim.reset()
    rows = read_rows(tmp_path / name / "train_sft.jsonl")
    return [{k: v for k, v in r.items() if k not in ("run_id", "created_at")} for r in rows]


def test_same_seed_same_rows_two_stage(sim: RunningSim, reference: Path, tmp_path: Path) -> None:
    a = run_twice(sim, reference, tmp_path, "a", seed=7)
    b = run_twice(sim, reference, tmp_path, "b", seed=7)
    c = run_twice(sim, reference, tmp_path, "c", seed=8)
    assert a == b and len(a) == 5
    # Two-stage: the answer is the service LLM's own answer to the bare instruction.
    assert all(r["messages"][1]["content"].startswith("Simulated Gemini answer to:") for r in a)
    assert [r["seed_prompt"] for r in a] != [r["seed_prompt"] for r in c]


def test_append_and_replace_the_local_split(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    one_item_per_seed(sim)
    run_synth(settings(sim, reference, tmp_path / "out", num_samples=4))
    sim.sim.reset()
    one_item_per_seed(sim)  # the same items again: duplicates of the rows already there
    second = run_synth(settings(sim, reference, tmp_path / "out", seed=1))
    assert second.rows_in_output == 8 and second.kept == 4
    assert second.as_dict()["duplicates"] == 4
    sim.sim.reset()
    one_item_per_seed(sim)
    third = run_synth(settings(sim, reference, tmp_path / "out", synth_ds_append=False))
    assert third.rows_in_output == third.kept == 8
    assert {r["run_id"] for r in read_rows(tmp_path / "out" / "train_sft.jsonl")} == {third.run_id}


@pytest.mark.parametrize("k", [3])
def test_requests_show_k_distinct_seeds(
    sim: RunningSim, reference: Path, tmp_path: Path, k: int
) -> None:
    cfg = settings(sim, reference, tmp_path / "out", seeds_per_request=k, num_samples=4)
    summary = run_synth(cfg)  # the simulator's own schema-shaped answers
    rows = read_rows(tmp_path / "out" / "train_sft.jsonl")
    assert summary.kept == len(rows) >= 1
    assert all(len(r["seed_ids"]) == len(set(r["seed_ids"])) == k for r in rows)


def test_a_run_that_keeps_nothing_still_ends_with_a_summary(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    script_each_seed(sim, {s: items((s, "a copy of the seed itself")) for s in TRAIN})
    summary = run_synth(settings(sim, reference, tmp_path / "out", synth_ds_append=False))
    d = summary.as_dict()
    assert (d["generated"], d["kept"], d["rows_in_output"]) == (8, 0, 0)
    assert d["duplicates_by_kind"] == {"exact": 8}
    assert (tmp_path / "out" / "train_sft.jsonl").read_text() == ""
    assert len(d["content_hash"]) == 64


def test_the_pair_store_as_reference_and_its_test_split(sim: RunningSim, tmp_path: Path) -> None:
    prompts = [*TRAIN, *TEST]
    with PairStore(tmp_path / "pairs.db", config=DataConfig(test_fraction=0.3)) as store:
        store.write(
            candidate(i, prompt=p, response=f"Answer to {p}", model="m")
            for i, p in enumerate(prompts)
        )
        held_out = [p.prompt for p in store.pairs(("test_sft",))]
        train = [p.prompt for p in store.pairs(("train_sft",))]
    assert held_out and train
    # Every request gets the same answer: a paraphrase of a held-out prompt of the store.
    target = held_out[0]
    sim.sim.script([items((f"{target} Please.", "x"))] * 20)
    store_url = f"sqlite:///{tmp_path / 'pairs.db'}"
    summary = run_synth(
        settings(sim, tmp_path, tmp_path / "out", reference_ds_id=store_url, num_samples=len(train))
    )
    d = summary.as_dict()
    assert (d["reference_rows"], d["test_prompts"]) == (len(train), len(held_out))
    assert d["contaminated"] == len(train) and d["kept"] == 0


def test_two_stage_counts_bad_instructions_and_answers(
    sim: RunningSim, reference: Path, tmp_path: Path
) -> None:
    stage_one = {
        s: json.dumps({"items": [{"instruction": new_item(i)[0]}]}) for i, s in enumerate(TRAIN)
    }
    stage_one[TRAIN[0]] = json.dumps(
        {"items": [{"instruction": new_item(0)[0]}, {"instruction": "Hi"}, {"text": "no key"}]}
    )
    script_each_seed(sim, stage_one)
    # Second stage: the request is the bare instruction; one answer comes back empty, one
    # never comes (503 until the retries run out).
    sim.sim.script([""], match=new_item(1)[0])
    sim.sim.script([{"fault": "error-503"}] * 4, match=new_item(2)[0])
    summary = run_synth(settings(sim, reference, tmp_path / "out", mode="two-stage"))
    d = summary.as_dict()
    assert d["invalid_by_reason"] == {
        "instruction too short": 1,
        "no instruction": 1,
        "empty response": 1,
        "no answer": 1,
    }
    assert (d["generated"], d["kept"], d["failed_requests"]) == (10, 6, 0)
    kept = {r["prompt"] for r in read_rows(tmp_path / "out" / "train_sft.jsonl")}
    assert new_item(0)[0] in kept and not kept & {new_item(1)[0], new_item(2)[0]}
