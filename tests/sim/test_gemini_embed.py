"""The simulated Gemini's embeddings seen through the real clients: google-genai's
``embed_content`` (``:batchEmbedContents``), Google's ``SingleEmbedContentResponse`` for
``:embedContent``, and the openai SDK on the OpenAI-compatible surface."""

from __future__ import annotations

import httpx
import openai
import pytest
from google import genai
from google.genai import errors, types

from standby.sim.gemini_embed import DIMENSIONS, vector
from tests.fixtures.sim import RunningSim

MODEL = "gemini-embedding-001"


def test_genai_embed_content_batch(client: genai.Client, sim: RunningSim) -> None:
    texts = ["first text", "second text", "first text"]
    result = client.models.embed_content(model=MODEL, contents=texts)
    assert isinstance(result, types.EmbedContentResponse)
    assert result.embeddings is not None
    values = [e.values for e in result.embeddings]
    assert [len(v or []) for v in values] == [DIMENSIONS] * 3
    assert values[0] == values[2] != values[1]  # deterministic, and per text
    assert values[0] == vector(MODEL, "first text")
    assert sim.sim.by_model == {MODEL: 1}  # one batched call


def test_genai_output_dimensionality_and_task_type(client: genai.Client) -> None:
    config = types.EmbedContentConfig(output_dimensionality=16, task_type="RETRIEVAL_QUERY")
    result = client.models.embed_content(model=MODEL, contents=["q"], config=config)
    assert result.embeddings is not None
    assert result.embeddings[0].values == vector(MODEL, "q")[:16]


def test_genai_bad_task_type_is_400(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as err:
        client.models.embed_content(
            model=MODEL, contents=["q"], config=types.EmbedContentConfig(task_type="NOPE")
        )
    assert err.value.code == 400


@pytest.mark.parametrize(("model", "code"), [("error-429", 429), ("error-503", 503)])
def test_genai_faults_by_model_name(client: genai.Client, model: str, code: int) -> None:
    with pytest.raises(errors.APIError) as err:
        client.models.embed_content(model=model, contents=["x"])
    assert err.value.code == code


def test_fault_set_for_every_model_applies(client: genai.Client, sim: RunningSim) -> None:
    sim.sim.set_fault("error-500")
    with pytest.raises(errors.ServerError):
        client.models.embed_content(model=MODEL, contents=["x"])


def test_embed_content_single_is_googles_shape(sim: RunningSim) -> None:
    body = {"content": {"parts": [{"text": "one"}]}, "outputDimensionality": 8}
    r = httpx.post(f"{sim.url}/v1beta/models/{MODEL}:embedContent", json=body)
    assert r.status_code == 200
    single = types.SingleEmbedContentResponse.model_validate(r.json())
    assert single.embedding is not None and single.embedding.values == vector(MODEL, "one")[:8]


def test_batch_over_100_is_400(sim: RunningSim) -> None:
    one = {"model": f"models/{MODEL}", "content": {"parts": [{"text": "x"}]}}
    r = httpx.post(
        f"{sim.url}/v1beta/models/{MODEL}:batchEmbedContents", json={"requests": [one] * 101}
    )
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_openai_surface_matches_native(sim: RunningSim) -> None:
    with openai.OpenAI(base_url=f"{sim.url}/v1beta/openai/", api_key="k", max_retries=0) as client:
        result = client.embeddings.create(
            model=MODEL, input=["a", "b"], dimensions=32, encoding_format="float"
        )
        assert [d.embedding for d in result.data] == [
            vector(MODEL, "a")[:32],
            vector(MODEL, "b")[:32],
        ]
        assert result.usage.prompt_tokens > 0
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(model="error-429", input="a", encoding_format="float")
