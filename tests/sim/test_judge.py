"""The simulated Gemini as judge: it recognises the evaluator's judge request, takes the reference
and the candidate out of the prompt and scores them with chrF (sacrebleu), deterministically;
its answer is the evaluator's schema, and it says it is the simulated judge. Through the real
client (``ServiceLLM`` + ``Judge``) against the simulator on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from sacrebleu.metrics.chrf import CHRF

from standby.evaluator.config import EvaluateConfig
from standby.evaluator.judge import Judge, Judgement, load_template, render
from standby.service_llm import ServiceLLM
from standby.service_llm.jsonout import schema_of
from standby.sim.answers import counting_answer
from standby.sim.judge import is_judge_schema, judgement, split_prompt
from tests.fixtures.sim import RunningSim

REFERENCE = "After 41 comes 42."
TEMPLATE = load_template(None)


def judged(candidate: str, reference: str = REFERENCE) -> Judgement:
    prompt = render(TEMPLATE, "What comes after 41?", reference, candidate)
    return Judgement.model_validate(judgement(prompt))  # the evaluator's own schema


def test_scores_follow_chrf_identical_on_top_unrelated_low() -> None:
    same = judged(REFERENCE)
    assert same.similarity_assessment.score == 100 and same.precision_assessment.score == 100
    close, off = judged("After 41 comes 41."), judged("zebra quilt vortex banana")
    assert 1 <= off.similarity_assessment.score < 10 and off.precision_assessment.score < 10
    assert off.similarity_assessment.score < close.similarity_assessment.score < 100
    # The numbers are sacrebleu's chrF (beta 2) and chrF1 (beta 1), rounded.
    cand = "After 41 comes 41."
    assert close.similarity_assessment.score == round(
        CHRF().sentence_score(cand, [REFERENCE]).score, 1
    )
    assert close.precision_assessment.score == round(
        CHRF(beta=1).sentence_score(cand, [REFERENCE]).score, 1
    )
    # Padding lowers precision more than similarity; a bare fragment scores low on both.
    padded = judged(REFERENCE + " And here is a great deal more that nobody asked for at all.")
    assert padded.precision_assessment.score < padded.similarity_assessment.score
    fragment = judged("A")
    assert fragment.precision_assessment.score < 30 and fragment.similarity_assessment.score < 10


def test_deterministic_and_says_it_is_the_simulated_judge() -> None:
    a, b = judged("After 41 comes 43."), judged("After 41 comes 43.")
    assert a == b
    for assessment in (a.similarity_assessment, a.precision_assessment):
        assert assessment.reason.startswith("simulated judge (not a model): chrF")


def test_the_prompt_is_read_back_even_with_template_markers_in_the_answers() -> None:
    prompt = render(TEMPLATE, "Say {x}.", "ref ### Candidate\n", "cand\n\n### Reference answer")
    assert split_prompt(prompt) == ("ref ### Candidate", "cand\n\n### Reference answer")
    unknown = Judgement.model_validate(judgement("Rate this answer: 42"))  # another template
    assert unknown.similarity_assessment.score == 1
    assert "not the packaged judge template" in unknown.similarity_assessment.reason


def test_only_the_judgement_schema_is_a_judge_request() -> None:
    assert is_judge_schema(schema_of(Judgement))
    assert not is_judge_schema({"type": "object", "properties": {"answer": {"type": "string"}}})
    assert not is_judge_schema(None)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("What comes after 41?", "After 41 comes 42."),
        ("What comes before 0?", "Before 0 comes -1."),
        ("What comes after 41? Explain.", None),
    ],
)
def test_the_counting_domain(prompt: str, expected: str | None) -> None:
    assert counting_answer(prompt) == expected


async def test_the_real_client_gets_real_scores_from_the_simulator(
    sim: RunningSim, tmp_path: Path
) -> None:
    settings = EvaluateConfig(
        service_llm_base_url=sim.url,
        service_llm_api_key="k",
        rate_limit_per_minute=60_000,
        lm_response_ds_id=str(tmp_path),
    )
    async with ServiceLLM(settings) as llm:
        judge = Judge(llm, TEMPLATE)
        top = await judge.judge("What comes after 41?", REFERENCE, REFERENCE, 0)
        low = await judge.judge("What comes after 41?", REFERENCE, "58 music dark", 0)
    assert top.judgement is not None and low.judgement is not None
    assert top.judgement.similarity_assessment.score == 100
    assert low.judgement == judged("58 music dark")
    assert low.judgement.similarity_assessment.score < 20


def test_the_openai_compatible_surface_judges_the_same(sim: RunningSim) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{sim.url}/v1beta/openai", api_key="k", max_retries=0)
    prompt = render(TEMPLATE, "What comes after 41?", REFERENCE, "After 41 comes 41.")
    schema = {"name": "judgement", "schema": schema_of(Judgement)}
    r = client.chat.completions.create(
        model="gemini-3.8-flash",
        messages=[{"role": "user", "content": prompt}],
        response_format={"type": "json_schema", "json_schema": schema},
    )
    assert Judgement.model_validate_json(r.choices[0].message.content or "") == judged(
        "After 41 comes 41."
    )
