"""Constrained-decoding libraries compared on the tiny Gemmas: cost per token on CPU and whether
every finished answer parses and validates against its schema (``jsonschema``).

    python -m venv /tmp/cmp && echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/cmp/lib/python3.11/site-packages/main.pth
    /tmp/cmp/bin/pip install xgrammar llguidance lm-format-enforcer
    PYTHONPATH=. /tmp/cmp/bin/python benchmarks/constrained_libs.py [--runs 5] [--max-new 160]

Each library runs as a ``LogitsProcessor`` inside ``model.generate`` (one row, sampling at
temperature 1, seeds 0..runs-1) for each schema in ``SCHEMAS`` and both tiny models; the same
prompts run unconstrained as the baseline. Reported per library: grammar compile time, time in
the processor per token (mask computation and application), tokens/s, and how many answers
finished (the grammar ended before ``--max-new``) and how many of those validate. Libraries
that are not installed are skipped. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

from standby.chat_format import chat_of, render_prompt
from standby.protocol import Message
from standby.sim.tiny_model import build_tiny_gemma

SCHEMAS: dict[str, dict[str, Any]] = {
    "json_object": {"type": "object"},
    "enum+number": {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no", "maybe"]},
            "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "role": {"enum": ["admin", "user", "guest"]},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 8},
                "maxItems": 3,
            },
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "zip": {"type": "integer", "minimum": 0, "maximum": 99999},
                },
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "active": {"type": "boolean"},
        },
        "required": ["name", "role", "tags", "address", "active"],
        "additionalProperties": False,
    },
    "array of objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer", "minimum": 0, "maximum": 1000},
                        "kind": {"enum": ["a", "b"]},
                    },
                    "required": ["id", "kind"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    },
}


class Timed(LogitsProcessor):
    """Runs ``step(input_ids, scores)`` and adds up the time it takes."""

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.step = step
        self.seconds = 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        began = time.perf_counter()
        out = self.step(input_ids, scores)
        self.seconds += time.perf_counter() - began
        return out  # type: ignore[return-value]


def unpack(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab].bool()


def llguidance_lib(tokenizer: Any, eos: list[int], vocab: int) -> Callable[..., Any]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    ll = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos[0])

    def compile_(schema: dict[str, Any]) -> Callable[[int], Timed]:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )
        error = llguidance.LLMatcher.validate_grammar(grammar, ll)
        if error:
            raise ValueError(error)

        def make(prompt_len: int) -> Timed:
            matcher = llguidance.LLMatcher(ll, grammar)
            bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)

            def step(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                if ids.shape[1] > prompt_len:
                    matcher.consume_token(int(ids[0, -1]))
                llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
                return scores.masked_fill(~unpack(bitmask, scores.shape[1]), float("-inf"))

            return Timed(step)

        return make

    return compile_


def xgrammar_lib(tokenizer: Any, eos: list[int], vocab: int) -> Callable[..., Any]:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=eos)
    compiler = xgr.GrammarCompiler(info)

    def compile_(schema: dict[str, Any]) -> Callable[[int], Timed]:
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

        def make(prompt_len: int) -> Timed:
            matcher = xgr.GrammarMatcher(compiled)
            bitmask = xgr.allocate_token_bitmask(1, vocab)

            def step(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                if ids.shape[1] > prompt_len:
                    matcher.accept_token(int(ids[0, -1]))
                matcher.fill_next_token_bitmask(bitmask, 0)
                xgr.apply_token_bitmask_inplace(scores, bitmask)
                return scores

            return Timed(step)

        return make

    return compile_


def lmfe_lib(tokenizer: Any, eos: list[int], vocab: int) -> Callable[..., Any]:
    import sys

    import transformers.tokenization_utils_base as base
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    # lm-format-enforcer 0.11 imports transformers 4's module name (gone in transformers 5).
    sys.modules.setdefault("transformers.tokenization_utils", base)
    from lmformatenforcer.integrations.transformers import (
        build_token_enforcer_tokenizer_data,
    )

    data = build_token_enforcer_tokenizer_data(tokenizer, vocab_size=vocab)

    def compile_(schema: dict[str, Any]) -> Callable[[int], Timed]:
        def make(prompt_len: int) -> Timed:
            enforcer = TokenEnforcer(data, JsonSchemaParser(schema))

            def step(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                allowed = enforcer.get_allowed_tokens(ids[0, prompt_len:].tolist())
                allowed_ids = getattr(allowed, "allowed_tokens", allowed)
                keep = torch.zeros(scores.shape[1], dtype=torch.bool)
                keep[torch.tensor(list(allowed_ids), dtype=torch.long)] = True
                return scores.masked_fill(~keep, float("-inf"))

            return Timed(step)

        return make

    return compile_


LIBS = {"llguidance": llguidance_lib, "xgrammar": xgrammar_lib, "lm-format-enforcer": lmfe_lib}


def generate(
    model: Any, prompt: list[int], eos: list[int], max_new: int, seed: int, proc: Timed | None
) -> list[int]:
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new,
        do_sample=True,
        temperature=1.0,
        top_k=None,
        top_p=None,
        eos_token_id=eos,
        pad_token_id=eos[0],
        logits_processor=[proc] if proc else None,
    )
    return [int(t) for t in out[0, len(prompt) :]]


def run(arch: str, path: Path, libs: list[str], runs: int, max_new: int) -> None:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    vocab = model.config.get_text_config().vocab_size
    gen_eos = model.generation_config.eos_token_id
    eos = [tokenizer.eos_token_id] + [e for e in gen_eos if e != tokenizer.eos_token_id]
    prompt = render_prompt(tokenizer, chat_of((Message("user", "Answer in JSON."),)))
    tokens, began = 0, time.perf_counter()
    with torch.inference_mode():
        for seed in range(runs * len(SCHEMAS)):
            tokens += len(generate(model, prompt, eos, max_new, seed, None))
    base = tokens / (time.perf_counter() - began)
    print(f"\n{arch}: vocab {vocab}; unconstrained {base:.0f} tokens/s ({tokens} tokens)")
    for lib in libs:
        try:
            compile_ = LIBS[lib](tokenizer, eos, vocab)
        except ImportError:
            print(f"  {lib}: not installed")
            continue
        compile_s = proc_s = total_s = 0.0
        tokens = finished = valid = 0
        failures: list[str] = []
        for name, schema in SCHEMAS.items():
            began = time.perf_counter()
            try:
                make = compile_(schema)
            except Exception as e:
                failures.append(f"{name}: cannot compile ({type(e).__name__}: {e})"[:160])
                continue
            compile_s += time.perf_counter() - began
            for seed in range(runs):
                proc = make(len(prompt))
                began = time.perf_counter()
                with torch.inference_mode():
                    out = generate(model, prompt, eos, max_new, seed, proc)
                total_s += time.perf_counter() - began
                proc_s += proc.seconds
                tokens += len(out)
                if out and out[-1] in eos:
                    finished += 1
                    text = tokenizer.decode(out[:-1], skip_special_tokens=True)
                    try:
                        jsonschema.validate(json.loads(text), schema)
                        valid += 1
                    except (ValueError, jsonschema.ValidationError) as e:
                        failures.append(f"{name}: {text[:60]!r}: {str(e)[:80]}")
        n = runs * len(SCHEMAS)
        print(
            f"  {lib:18} compile {compile_s / len(SCHEMAS) * 1000:7.1f} ms/schema | "
            f"processor {proc_s / max(tokens, 1) * 1e6:7.0f} us/token | "
            f"{tokens / max(total_s, 1e-9):5.0f} tokens/s | finished {finished}/{n}, "
            f"valid {valid}/{finished}"
        )
        for f in failures[:4]:
            print(f"      {f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="samples per schema")
    parser.add_argument("--max-new", type=int, default=160)
    parser.add_argument("--libs", nargs="*", default=list(LIBS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    for lib in args.libs:
        try:
            module = {"lm-format-enforcer": "lmformatenforcer"}.get(lib, lib)
            version = __import__("importlib.metadata").metadata.version(
                {"lmformatenforcer": "lm-format-enforcer"}.get(module, module)
            )
            print(f"{lib} {version}")
        except Exception:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("gemma3_text", "gemma4"):
            path = build_tiny_gemma(Path(tmp) / arch, seed=0, arch=arch)
            run(arch, path, args.libs, args.runs, args.max_new)


if __name__ == "__main__":
    main()
