"""Training throughput of ``standby train``'s trainer (TRL SFTTrainer + LoRA): tokens/s and peak
memory.

    .venv/bin/python benchmarks/train_throughput.py                       # tiny Gemma, CPU
    .venv/bin/python benchmarks/train_throughput.py --arch gemma3-1b      # real size, one GPU
    .venv/bin/python benchmarks/train_throughput.py --arch gemma-7b --steps 300 --batch-size 2

``--arch`` builds a random-weight model of the real architecture and size from its config,
straight on the GPU (nothing is downloaded: the GPU machines have no network), so the number
can be taken whenever a GPU is lent. The trainer is the one ``standby train`` builds
(``build_trainer``: the same LoRA targets, bf16 and gradient checkpointing on GPU, assistant-only
loss); the rows are chats of ``--seq-len`` tokens. The first ``--warmup`` steps are not timed.
Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from standby.sim.tiny_model import build_tiny_gemma, tiny_corpus
from standby.trainer.config import TrainConfig
from standby.trainer.model import place
from standby.trainer.train import build_trainer

# The published configs of the real models (random weights: only the shapes matter here).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "gemma3-1b": (
        "gemma3_text",
        {
            "vocab_size": 262_144,
            "hidden_size": 1152,
            "intermediate_size": 6912,
            "num_hidden_layers": 26,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "sliding_window": 512,
            "query_pre_attn_scalar": 256,
            "max_position_embeddings": 32_768,
        },
    ),
    "gemma-2b": (
        "gemma",
        {
            "vocab_size": 256_000,
            "hidden_size": 2048,
            "intermediate_size": 16_384,
            "num_hidden_layers": 18,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "max_position_embeddings": 8192,
        },
    ),
    "gemma-7b": (
        "gemma",
        {
            "vocab_size": 256_000,
            "hidden_size": 3072,
            "intermediate_size": 24_576,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 256,
            "max_position_embeddings": 8192,
        },
    ),
}


class StepClock(TrainerCallback):  # type: ignore[misc]
    """Wall time of the steps after the warm-up."""

    def __init__(self, warmup: int, sync: bool) -> None:
        super().__init__()
        self.warmup, self.sync = warmup, sync
        self.started: float | None = None
        self.ended: float | None = None

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup:
            self.started = self._now()
        if state.global_step == state.max_steps:
            self.ended = self._now()


def chats(tokenizer: Any, rows: int, seq_len: int) -> Any:
    """``rows`` chats (a question, a long answer) of about ``seq_len`` tokens each."""
    import datasets  # type: ignore[import-untyped]

    lines = tiny_corpus(200_000).splitlines()
    out, i = [], 0
    for r in range(rows):
        answer: list[str] = []
        while True:
            answer.append(lines[i % len(lines)])
            i += 1
            chat = [
                {"role": "user", "content": f"Question {r}: tell me more."},
                {"role": "assistant", "content": " ".join(answer)},
            ]
            ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)
            if len(ids) >= seq_len:
                break
        out.append({"messages": chat})
    return datasets.Dataset.from_list(out)


def build_model(arch: str, tokenizer: Any, bf16: bool) -> Any:
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    kind, sizes = ARCHS[arch]
    ids = tokenizer.convert_tokens_to_ids
    config = CONFIG_MAPPING[kind](
        **sizes,
        pad_token_id=ids("<pad>"),
        bos_token_id=ids("<bos>"),
        eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
    )
    dtype = torch.bfloat16 if bf16 else torch.float32
    with torch.device("cuda"):  # initialise on the GPU: a 7B model on the CPU takes minutes
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), help="real-size random model (GPU)")
    parser.add_argument("--steps", type=int, default=None, help="default: 300 GPU, 60 CPU")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 GPU, 8 CPU")
    parser.add_argument("--seq-len", type=int, default=None, help="default: 1024 GPU, 128 CPU")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args()
    gpu = args.arch is not None
    if gpu and not torch.cuda.is_available():
        parser.error("--arch needs a CUDA GPU (without it: the tiny model on the CPU)")
    steps = args.steps or (300 if gpu else 60)
    warmup = args.warmup if args.warmup is not None else max(1, steps // 10)
    batch = args.batch_size or (4 if gpu else 8)
    seq_len = args.seq_len or (1024 if gpu else 128)
    if not 0 <= warmup < steps:
        parser.error(f"--warmup must be below --steps ({steps})")
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="standby-bench-") as tmp:
        tiny = build_tiny_gemma(Path(tmp) / "tiny")
        tokenizer = AutoTokenizer.from_pretrained(tiny)
        cfg = TrainConfig(
            base_model_id=args.arch or str(tiny),
            output_dir=Path(tmp) / "out",
            device="cuda" if gpu else "cpu",
            max_steps=steps,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            max_length=seq_len,
            lora_r=args.lora_r,
            lora_alpha=args.lora_r,
            logging_steps=steps,
            save_steps=10 * steps,
            eval_ds_split=None,
            publish_event=False,
        )
        placement = place(cfg)
        if gpu:
            model = build_model(args.arch, tokenizer, placement.bf16)
            torch.cuda.reset_peak_memory_stats()
        else:
            model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
        data = chats(tokenizer, steps * batch, seq_len)
        trainer = build_trainer(cfg, placement, model, tokenizer, data, None)
        clock = StepClock(warmup, sync=gpu)
        trainer.add_callback(clock)
        trainer.train()

    assert clock.started is not None and clock.ended is not None
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    tokens = sum(lengths) / len(lengths) * batch * (steps - warmup)
    seconds = clock.ended - clock.started
    params = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result: dict[str, Any] = {
        "model": args.arch or "tiny-gemma (hidden 64, 2 layers)",
        "device": torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()}",
        "params": params,
        "trainable": trainable,
        "steps_timed": steps - warmup,
        "batch": batch,
        "seq_len": round(sum(lengths) / len(lengths)),
        "bf16": placement.bf16,
        "gradient_checkpointing": placement.gradient_checkpointing,
        "tokens_per_s": round(tokens / seconds, 1),
        "steps_per_s": round((steps - warmup) / seconds, 2),
        "final_loss": next(h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h),
    }
    if gpu:
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["python"] = platform.python_version()
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
