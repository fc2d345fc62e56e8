"""Training the tiny Gemma on CPU: the loss falls, only LoRA weights move, the adapter reloads,
merges and generates, its card says how it was made, and the pipeline hears about it."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from standby.chat_format import render_prompt
from standby.hf_loading import library_warnings_quiet
from standby.store import open_bus
from standby.trainer.config import TrainConfig
from standby.trainer.data import prepare_split
from standby.trainer.model import load_base, place
from standby.trainer.train import TrainResult, build_trainer, train
from tests.trainer.conftest import tiny_settings


def test_loss_falls_and_only_the_lora_weights_change(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    cfg = TrainConfig.model_validate(tiny_settings(tiny_model_dir, chat_dataset, tmp_path / "a"))
    placement = place(cfg)
    base = load_base(cfg, placement)
    train_data = prepare_split(str(chat_dataset), "train_sft")
    eval_data = prepare_split(str(chat_dataset), "test_sft")
    trainer = build_trainer(
        cfg, placement, base.model, base.tokenizer, train_data.dataset, eval_data.dataset
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    eval_before = trainer.evaluate()["eval_loss"]
    trainer.train()
    eval_after = trainer.evaluate()["eval_loss"]

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 30 and len(losses) == 7  # step 1, then every 5
    assert losses[-1] < losses[0] - 0.5
    assert eval_after < eval_before - 0.5

    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert len(lora) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    assert all(after[n].requires_grad for n in lora)
    unchanged = [n for n in lora if torch.equal(before[n], after[n].detach())]
    assert unchanged == []
    frozen = [n for n in before if "lora_" not in n]
    assert frozen and not any(after[n].requires_grad for n in frozen)
    moved = [n for n in frozen if not torch.equal(before[n], after[n].detach())]
    assert moved == []
    # ...and the base weights are still those on disk.
    on_disk = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, weight in on_disk.items():
        key = f"base_model.model.{name}".replace(".weight", ".base_layer.weight")
        live = after.get(key, after.get(f"base_model.model.{name}"))
        assert live is not None, name
        assert torch.equal(live.detach(), weight), name


def test_the_adapter_reloads_merges_and_generates(
    trained: tuple[TrainConfig, TrainResult], tiny_model_dir: Path
) -> None:
    cfg, result = trained
    tokenizer = AutoTokenizer.from_pretrained(result.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with library_warnings_quiet():  # peft's own deprecation, as in the gateway
        tuned = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    prompt = torch.tensor(
        [render_prompt(tokenizer, [{"role": "user", "content": "What comes after 7?"}])]
    )

    def answer(model: Any) -> str:
        with torch.no_grad():
            out = model.generate(input_ids=prompt, max_new_tokens=12, do_sample=False)
        return str(tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True))

    with_adapter = answer(tuned)
    assert with_adapter.startswith("After")  # it learned the pattern of its answers
    merged = tuned.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert answer(merged) == with_adapter
    # The merged model that train() saved is the same model.
    saved = AutoModelForCausalLM.from_pretrained(cfg.merged_dir, dtype=torch.float32).eval()
    assert answer(saved) == with_adapter
    assert result.card is not None and result.card.adapter is not None
    assert result.card.adapter.merged == str(cfg.merged_dir)


def test_the_card_says_how_the_adapter_was_made(
    trained: tuple[TrainConfig, TrainResult], tiny_model_dir: Path, chat_dataset: Path
) -> None:
    cfg, result = trained
    card = json.loads((result.adapter_dir / "standby-model.json").read_text())
    assert result.card is not None and card == result.card.to_json()
    assert card["format"] == 1
    assert card["base_model"] == {"id": str(tiny_model_dir), "revision": None, "sha": None}
    train_split = prepare_split(str(chat_dataset), "train_sft").loaded
    assert card["dataset"] == {
        "source": str(chat_dataset),
        "split": "train_sft",
        "revision": None,
        "snapshot_id": None,
        "content_hash": train_split.content_hash,
        "rows": 48,
        "skipped_rows": 0,
    }
    assert card["eval_dataset"]["split"] == "test_sft" and card["eval_dataset"]["rows"] == 8
    assert card["version"].endswith(train_split.content_hash[:8])
    assert card["created_at"].endswith("+00:00")
    hp = card["hyperparameters"]
    assert (hp["lora_r"], hp["lora_alpha"], hp["lora_dropout"]) == (8, 16, 0.05)
    assert hp["lora_target_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert (hp["learning_rate"], hp["lr_scheduler_type"], hp["warmup_ratio"]) == (
        3e-3,
        "cosine",
        0.1,
    )
    assert (hp["assistant_only_loss"], hp["bf16"], hp["gradient_checkpointing"]) == (
        True,
        False,
        False,
    )
    metrics = card["metrics"]
    assert metrics["train_loss"] > 0 and metrics["eval_loss"] > 0
    assert [s for s, _ in metrics["loss_curve"]] == [1, 5, 10, 15, 20, 25, 30]
    assert metrics["final_loss"] == metrics["loss_curve"][-1][1] < metrics["loss_curve"][0][1]
    assert metrics["eval_loss_curve"] == [[30, metrics["eval_loss"]]]  # measured once, at the end
    training = card["training"]
    assert (training["global_step"], training["resumed_from_step"]) == (30, None)
    assert training["device"] == "cpu" and training["wall_time_s"] > 0
    assert {"torch", "transformers", "peft", "trl"} <= set(card["libraries"])
    # The adapter folder is what peft, vLLM and TGI load; the checkpoints are gone.
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not cfg.checkpoint_dir.exists()


def test_the_loss_curves_are_drawn_beside_the_adapter(
    trained: tuple[TrainConfig, TrainResult],
) -> None:
    _, result = trained
    assert result.card is not None and result.card.metrics is not None
    svg = ET.parse(result.adapter_dir / "loss.svg").getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    assert svg.findtext("svg:title", namespaces=ns) == f"Loss of {result.card.version}"
    texts = {"".join(t.itertext()).strip() for t in svg.iterfind(".//svg:text", ns)}
    assert {"training loss", "eval loss", "step", "loss"} <= texts
    # One drawn point per logged loss: the line's path has a vertex for each.
    for gid, curve in (
        ("train-loss", result.card.metrics.loss_curve),
        ("eval-loss", result.card.metrics.eval_loss_curve),
    ):
        group = svg.find(f".//svg:g[@id='{gid}']", ns)
        assert group is not None, gid
        line = group.find(".//svg:path", ns)
        assert line is not None
        assert len(re.findall(r"[ML]", line.get("d", ""))) == len(curve), gid


def test_training_completed_is_published(trained: tuple[TrainConfig, TrainResult]) -> None:
    cfg, result = trained

    async def read() -> list[Any]:
        async with open_bus(cfg.bus) as bus:
            return await bus.consume("training.completed", "test", "reader")

    (delivery,) = asyncio.run(read())
    event = delivery.event
    assert (event.type, event.source) == ("training.completed", "standby.trainer")
    assert result.card is not None
    card = result.card.to_json()
    assert event.data == {
        "version": card["version"],
        "adapter_dir": str(result.adapter_dir.resolve()),
        "base_model": card["base_model"]["id"],
        "base_model_revision": None,
        "dataset_source": card["dataset"]["source"],
        "snapshot_id": None,
        "content_hash": card["dataset"]["content_hash"],
        "train_loss": card["metrics"]["train_loss"],
        "eval_loss": card["metrics"]["eval_loss"],
        "merged_dir": str(cfg.merged_dir),
        "hub": None,
    }


def test_same_seed_same_adapter(tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        settings = tiny_settings(
            tiny_model_dir,
            chat_dataset,
            tmp_path / name,
            max_steps=6,
            seed=seed,
            eval_ds_split=None,
        )
        result = train(TrainConfig.model_validate(settings))
        return load_file(str(result.adapter_dir / "adapter_model.safetensors"))

    first, again, other = run("a", 1), run("b", 1), run("c", 2)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
