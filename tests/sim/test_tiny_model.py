"""The tiny Gemma builder: a real HF layout that the Auto classes load and generate from, for
Gemma 3 and for Gemma 4 (whose chat template declares tools and reads back tool calls)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

from standby.sim import tiny_gemma4
from standby.sim.tiny_model import SPECIAL_TOKENS, build_tiny_gemma, tiny_corpus

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Why is the sky blue?"},
]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return tokenizer, model


def test_corpus_is_deterministic_and_about_20kb() -> None:
    assert tiny_corpus() == tiny_corpus()
    assert 19_000 < len(tiny_corpus()) < 21_000


def test_reloads_with_auto_classes(tiny_model_dir: Path, loaded: tuple[Any, Any]) -> None:
    tokenizer, model = loaded
    assert 900 <= len(tokenizer) <= 1000
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers) == ("gemma3_text", 64, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_chat_template_is_gemma_turns(loaded: tuple[Any, Any]) -> None:
    tokenizer, _ = loaded
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHello there<end_of_turn>\n"
        "<start_of_turn>model\nHi!<end_of_turn>\n"
        "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    partial = [*CHAT[:2], {"role": "assistant", "content": "Hi, I am"}]
    cont = tokenizer.apply_chat_template(partial, tokenize=False, continue_final_message=True)
    assert cont.endswith("<start_of_turn>model\nHi, I am")
    # {% generation %} marks exactly the assistant turn (for TRL's assistant_only_loss).
    out = tokenizer.apply_chat_template(
        CHAT[:3], return_dict=True, return_assistant_tokens_mask=True
    )
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == "Hi!<end_of_turn>\n"


def test_generate_stops_at_an_eos_token(loaded: tuple[Any, Any]) -> None:
    tokenizer, model = loaded
    enc = tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    n = enc["input_ids"].shape[1]
    with torch.inference_mode():
        free = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert free.shape[1] <= n + 12
    # Random weights rarely say <end_of_turn>; make the 4th generated token an eos instead.
    eos = int(free[0, n + 3])
    first = next(i for i, t in enumerate(free[0, n:].tolist()) if t == eos)
    with torch.inference_mode():
        stopped = model.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    assert stopped.shape[1] == n + first + 1
    assert int(stopped[0, -1]) == eos


def test_build_is_idempotent_and_fast(tmp_path: Path, tiny_model_dir: Path) -> None:
    weights = next(tiny_model_dir.glob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    assert build_tiny_gemma(tiny_model_dir) == tiny_model_dir
    assert weights.stat().st_mtime_ns == before
    began = time.perf_counter()
    fresh = build_tiny_gemma(tmp_path / "again", seed=0)
    assert time.perf_counter() - began < 10
    a = (fresh / "model.safetensors").read_bytes()
    b = (tiny_model_dir / "model.safetensors").read_bytes()
    assert a == b  # same seed, same weights


def test_other_gemma_architectures(tmp_path: Path) -> None:
    path = build_tiny_gemma(tmp_path / "g2", arch="gemma2")
    assert AutoModelForCausalLM.from_pretrained(path).config.model_type == "gemma2"
    with pytest.raises(ValueError, match="arch"):
        build_tiny_gemma(tmp_path / "bad", arch="llama")


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City"}},
            "required": ["city"],
        },
    },
}


def test_gemma4_reloads_as_the_real_checkpoints_do(tiny_gemma4_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma4_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma4_dir).eval()
    # model_type gemma4 around a gemma4_text config, like google/gemma-4-E2B-it: the causal-LM
    # auto class gives the conditional-generation class, which generates from text alone.
    assert model.config.model_type == "gemma4"
    assert type(model).__name__ == "Gemma4ForConditionalGeneration"
    text = model.config.get_text_config()
    assert (text.model_type, text.hidden_size, text.num_hidden_layers) == ("gemma4_text", 64, 2)
    for token in tiny_gemma4.SPECIAL_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    stops = {tokenizer.convert_tokens_to_ids(t) for t in tiny_gemma4.STOP_TOKENS}
    assert stops == set(model.generation_config.eos_token_id)
    enc = tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_gemma4_template_is_the_documented_turn_and_tool_format(tiny_gemma4_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma4_dir)
    call = {"id": "c1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}
    chat = [
        *CHAT[:2],
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
    ]
    text = tokenizer.apply_chat_template(
        chat, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<bos><|turn>system\nBe brief."
        '<|tool>declaration:get_weather{description:<|"|>Weather now.<|"|>,parameters:{'
        'properties:{city:{description:<|"|>City<|"|>,type:<|"|>STRING<|"|>}},'
        'required:[<|"|>city<|"|>],type:<|"|>OBJECT<|"|>}}<tool|><turn|>\n'
        "<|turn>user\nHello there<turn|>\n"
        "<|turn>model\n"
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:2}<tool_call|>'
        '<|tool_response>response:get_weather{value:<|"|>sunny<|"|>}<tool_response|>'
    )  # after a result the model goes on in its open turn: no new generation prompt
    done = [*chat, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Ok"}]
    text = tokenizer.apply_chat_template(done, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<tool_response|>Sunny.<turn|>\n<|turn>user\nOk<turn|>\n<|turn>model\n")
    # The model's own output, tool calls included, is what assistant-only training learns.
    out = tokenizer.apply_chat_template(
        done[:-1], tools=[WEATHER_TOOL], return_dict=True, return_assistant_tokens_mask=True
    )
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == (
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:2}<tool_call|>Sunny.<turn|>\n'
    )


def test_gemma4_template_renders_as_the_real_one(tiny_gemma4_dir: Path) -> None:
    """Text and tool chats render exactly as with the template google/gemma-4-E2B-it ships
    (its current revision, as TRL keeps it to recognise the model)."""
    real = (Path(trl.__file__).parent / "chat_templates" / "gemma4_v5.jinja").read_text()
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma4_dir)
    call = {"id": "c1", "type": "function"}
    call["function"] = {
        "name": "get_weather",
        "arguments": {"city": "Paris", "o": {"k": [1, True]}},
    }
    time_call = {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {}}}
    calls = [*CHAT[:2], {"role": "assistant", "content": "", "tool_calls": [call, time_call]}]
    results = [
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "name": "get_time", "content": "noon"},
    ]
    answered = [*calls, *results, {"role": "assistant", "content": "Sunny."}, CHAT[3]]
    time_tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    for chat in (CHAT, CHAT[1:], calls, [*calls, *results], answered, [*calls, *results, CHAT[3]]):
        for tools in (None, [WEATHER_TOOL, time_tool]):
            kw: dict[str, Any] = {"tools": tools, "tokenize": False, "add_generation_prompt": True}
            mine = tokenizer.apply_chat_template(chat, **kw)
            assert mine == tokenizer.apply_chat_template(chat, chat_template=real, **kw)
