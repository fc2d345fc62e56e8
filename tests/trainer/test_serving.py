"""The gateway's local backend serves a freshly trained adapter: a real gateway, the openai SDK,
and the same answer as the adapter gives loaded by hand with peft."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from standby.chat_format import render_prompt
from standby.hf_loading import library_warnings_quiet
from standby.trainer.config import TrainConfig
from standby.trainer.train import TrainResult
from tests.fixtures.gateway import StartGateway

ROUTE = "gemma-standby"
MAX_NEW = 12


def test_the_gateway_serves_the_trained_adapter(
    trained: tuple[TrainConfig, TrainResult],
    tiny_model_dir: Path,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    _, result = trained
    # The evaluator adds judge scores to the card when the model passes the gate; the
    # gateway must still read them from the trainer's card.
    adapter = tmp_path / "adapter"
    shutil.copytree(result.adapter_dir, adapter, ignore=shutil.ignore_patterns("merged"))
    card = json.loads((adapter / "standby-model.json").read_text())
    card["scores"] = {"similarity": 93.5, "precision": 91.25}
    (adapter / "standby-model.json").write_text(json.dumps(card))
    gateway = start_gateway(
        {
            "server": {"host": "127.0.0.1", "port": 0, "api_keys": []},
            "backends": {
                "gemma": {
                    "type": "local",
                    "model": str(tiny_model_dir),
                    "adapter": str(adapter),
                    "device": "cpu",
                    "threads": 1,
                    "max_new_tokens": MAX_NEW,
                }
            },
            "routes": {ROUTE: ["gemma"]},
            "capture": {"enabled": False},
        }
    )
    messages = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What comes after 12?"},
    ]
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=ROUTE,
        messages=messages,
        temperature=0,
        max_tokens=MAX_NEW,
    )
    assert raw.headers["x-standby-backend"] == "gemma"
    served = raw.parse().choices[0].message.content
    assert served is not None and served.startswith("After")

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with library_warnings_quiet():  # peft's own deprecation, as in the gateway
        model = PeftModel.from_pretrained(base, str(adapter)).eval()
    prompt = torch.tensor([render_prompt(tokenizer, messages)])
    with torch.no_grad():
        out = model.generate(input_ids=prompt, max_new_tokens=MAX_NEW, do_sample=False)
    assert served == tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)

    with urllib.request.urlopen(f"{gateway.url}/metrics") as response:
        metrics = response.read().decode()
    assert 'standby_fallback_model_score{criterion="similarity"} 93.5' in metrics
    assert 'standby_fallback_model_score{criterion="precision"} 91.25' in metrics
