"""A small no_robots-style reference dataset (train and test splits), fast service-LLM
settings against the simulated Gemini, and helpers to script the generator's answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from standby.synth.config import SynthConfig
from tests.fixtures.sim import RunningSim

TRAIN = [
    "Write a limerick about a cat who loves to sail.",
    "Explain how the gears on a bicycle make pedalling easier uphill.",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "Give me a recipe for a quick vegetable curry with chickpeas.",
    "What are the main causes of ocean tides?",
    "Draft a polite email declining an invitation to a Friday meeting.",
    "List five tips for keeping houseplants alive in winter.",
    "How does compound interest differ from simple interest?",
]
TEST = [
    "Write a haiku about autumn leaves falling in the park.",
    "How do vaccines train the immune system to fight viruses?",
    "Translate 'good morning, how are you today' into French and Spanish.",
]


def chat(prompt: str, answer: str, pid: str, category: str = "Generation") -> dict[str, Any]:
    return {
        "prompt": prompt,
        "prompt_id": pid,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "category": category,
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_reference(folder: Path) -> Path:
    """A folder with ``train_sft.jsonl`` (8 rows) and ``test_sft.jsonl`` (3 rows)."""
    train = [chat(p, f"A good answer to: {p}", f"train-{i}") for i, p in enumerate(TRAIN)]
    test = [chat(p, f"The answer to: {p}", f"test-{i}", "Open QA") for i, p in enumerate(TEST)]
    write_jsonl(folder / "train_sft.jsonl", train)
    write_jsonl(folder / "test_sft.jsonl", test)
    return folder


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_reference(tmp_path / "reference")


def settings(sim: RunningSim, reference: Path, out: Path, **kw: Any) -> SynthConfig:
    """Fast pacing and backoff so tests take milliseconds per call; one seed per request so a
    scripted answer can be matched to its request by the seed's text."""
    base: dict[str, Any] = {
        "service_llm_base_url": sim.url,
        "service_llm_api_key": "any",
        "rate_limit_per_minute": 60_000,
        "service_llm_backoff_s": 0.01,
        "service_llm_max_backoff_s": 0.05,
        "service_llm_max_retries": 3,
        "service_llm_timeout_s": 5,
        "service_llm_reasks": 1,
        "reference_ds_id": str(reference),
        "output_dir": str(out),
        "num_samples": len(TRAIN),
        "seeds_per_request": 1,
        "gen_workers": 3,
        "progress": False,
    }
    return SynthConfig.model_validate({**base, **kw})


def items(*pairs: tuple[str, str]) -> str:
    """The raw text of a one-stage answer holding these (instruction, response) items."""
    return json.dumps({"items": [{"instruction": i, "response": r} for i, r in pairs]})


NEW = [
    "Why do volcanoes erupt, and can scientists predict when?",
    "Suggest a weekend itinerary for a first visit to Lisbon.",
    "Compare the opening moves e4 and d4 in chess for a beginner.",
    "Write a short bedtime story about a shy dragon learning to fly.",
    "What equipment does a new beekeeper need in the first year?",
    "Convert this recipe for 4 servings of pancakes to 10 servings.",
    "Explain lunar phases to a seven-year-old using an orange and a lamp.",
    "Draft a cover letter opening for a junior data analyst role.",
    "How are glaciers formed and why do they move downhill?",
    "Give step-by-step instructions to fold a paper crane.",
    "What were the social effects of the printing press in Europe?",
    "Write a motivational message for a friend running a marathon.",
]


def new_item(n: int) -> tuple[str, str]:
    """A distinct, valid generated pair (no two share much wording)."""
    return NEW[n], f"A careful, helpful answer about: {NEW[n].lower()}"


def script_each_seed(sim: RunningSim, answers: dict[str, str]) -> None:
    """Queue one answer per seed instruction, taken only by the request showing that seed."""
    for seed, text in answers.items():
        sim.sim.script([text], match=seed)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
