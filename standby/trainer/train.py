"""LoRA supervised fine-tuning with TRL's ``SFTTrainer`` + peft, from settings to a finished
adapter folder.

    output_dir/
      adapter_config.json, adapter_model.safetensors   the LoRA adapter (peft layout)
      tokenizer files, chat_template.jinja             the tokenizer it was trained with
      standby-model.json                               what it is (store/card.py)
      loss.svg                                         its loss curves (loss_plot.py)
      checkpoints/checkpoint-N/                        while training; removed after success
      merged/                                          base + adapter, when asked

A run that is killed leaves its checkpoints; ``resume`` continues from the last one (model,
optimizer, scheduler, RNG and data order). Under ``accelerate launch`` every process trains and
only the main one writes the adapter, pushes and publishes.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from standby.chat_format import renders_tools
from standby.data.pairs import DataError
from standby.errors import StandbyError
from standby.hf_loading import library_warnings_quiet, model_path
from standby.store.card import (
    FORMAT,
    AdapterFiles,
    BaseModelRef,
    DataRef,
    Metrics,
    ModelCard,
    TimeBudget,
    Training,
    card_path,
    write_card,
)
from standby.store.urls import safe_url
from standby.trainer.completion import needs_completion_split, split_last_answer
from standby.trainer.config import TrainConfig, TrainError
from standby.trainer.data import Prepared, prepare_split, served_rows
from standby.trainer.loss_plot import write_loss_plot
from standby.trainer.metadata import default_version, hyperparameters, library_versions
from standby.trainer.model import BaseModel, Placement, load_base, place
from standby.trainer.publish import TOPIC, check_bus, publish_completed, push_adapter

log = logging.getLogger("standby.trainer")


@dataclass(frozen=True)
class TrainResult:
    """A finished run: where the adapter is and its model card (None in the processes of a
    multi-process run but the main one)."""

    adapter_dir: Path
    card: ModelCard | None


def lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(cfg: TrainConfig, placement: Placement, *, has_eval: bool) -> Any:
    from trl.trainer.sft_config import SFTConfig

    periodic_eval = has_eval and cfg.eval_steps is not None
    return SFTConfig(
        output_dir=str(cfg.checkpoint_dir),
        use_cpu=placement.device == "cpu",
        bf16=placement.bf16,
        activation_checkpointing=placement.gradient_checkpointing,
        gradient_checkpointing=placement.gradient_checkpointing,
        # Non-reentrant checkpointing works with frozen inputs (LoRA) and under DDP, where
        # every LoRA weight gets a gradient each step (no search for unused parameters).
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_length=cfg.max_length,
        packing=cfg.packing,
        assistant_only_loss=cfg.assistant_only_loss,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if periodic_eval else "no",
        eval_steps=cfg.eval_steps if periodic_eval else None,
        report_to="none",
    )


def time_budget_callback(seconds: float) -> Any:
    """A ``TrainerCallback`` that ends training (saving it) once ``seconds`` are spent; its
    ``hit`` tells the card that the budget cut the run short."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.began = time.perf_counter()
            self.hit = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if not self.hit and time.perf_counter() - self.began >= seconds:
                self.hit = True
                log.warning(
                    "training time budget of %.0f s spent at step %d: stopping",
                    seconds,
                    state.global_step,
                )
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def build_trainer(
    cfg: TrainConfig, placement: Placement, model: Any, tokenizer: Any, train: Any, evals: Any
) -> Any:
    """TRL's SFTTrainer with a fresh LoRA adapter on ``model`` (also used by the benchmark)."""
    from transformers import set_seed
    from trl.trainer.sft_trainer import SFTTrainer

    set_seed(cfg.seed)  # LoRA's A matrices are drawn when the adapter is attached
    train, evals = served_rows(train, tokenizer), served_rows(evals, tokenizer)
    tools = "tools" in train.column_names
    if tools and not renders_tools(tokenizer):
        raise TrainError("the data has tool pairs but the base model's chat template has no tools")
    if cfg.assistant_only_loss and (tools or needs_completion_split(tokenizer, True)):
        # Tool pairs always: a template's markers leave out the token a call stops on
        # (Gemma 4's <|tool_response>), and earlier calls of the loop may be the fallback's.
        log.info("training on each conversation's last answer (completion-only loss)")
        train, evals = split_last_answer(train), split_last_answer(evals)
        cfg = cfg.model_copy(update={"assistant_only_loss": False})  # TRL: completion-only
    try:
        with library_warnings_quiet():
            return SFTTrainer(
                model=model,
                args=sft_config(cfg, placement, has_eval=evals is not None),
                train_dataset=train,
                eval_dataset=evals,
                processing_class=tokenizer,
                peft_config=lora_config(cfg),
                callbacks=[time_budget_callback(cfg.max_time_s)] if cfg.max_time_s else None,
            )
    except ValueError as e:  # TRL / peft reject a setting: no such target module, ...
        raise TrainError(f"cannot set up training: {str(e).splitlines()[0]}") from e


def last_checkpoint(cfg: TrainConfig) -> Path | None:
    """The newest complete ``checkpoints/checkpoint-N`` (one with its trainer state)."""
    if not cfg.checkpoint_dir.is_dir():
        return None
    steps = [
        (int(p.name.removeprefix("checkpoint-")), p)
        for p in cfg.checkpoint_dir.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(steps)[1] if steps else None


def pin_version(cfg: TrainConfig, default: str) -> TrainConfig:
    """``cfg`` with its version set (``default`` unless given) and ``{version}`` in
    ``output_dir`` replaced by it (``/adapters/{version}``: one folder per version)."""
    version = cfg.version or default
    templated = "{version}" in str(cfg.output_dir)
    if templated and cfg.version is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Each process would date its own version (and folder): they must agree on one.
        raise TrainError(
            "--output-dir contains {version}: give --version when several processes train"
        )
    out = Path(str(cfg.output_dir).replace("{version}", version))
    return cfg.model_copy(update={"version": version, "output_dir": out})


def check_output_dir(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from (None: start fresh); TrainError when the folder holds a
    finished adapter or an interrupted run and the settings do not say what to do with it."""
    out = cfg.output_dir
    checkpoint = last_checkpoint(cfg)
    if cfg.resume:
        if checkpoint is None and card_path(out).is_file():
            raise TrainError(
                f"{out} holds a finished adapter and no checkpoint to resume from"
                " (--overwrite replaces it)"
            )
        if checkpoint is None:
            log.info("resume: no checkpoint in %s, starting from the beginning", cfg.checkpoint_dir)
        return checkpoint
    if cfg.overwrite:
        if out.is_dir() and os.environ.get("RANK", "0") == "0":  # once under accelerate/torchrun
            shutil.rmtree(out)
        return None
    if card_path(out).is_file():
        raise TrainError(f"{out} already holds a trained adapter (--overwrite replaces it)")
    if checkpoint is not None:
        raise TrainError(
            f"{out} holds an interrupted run ({checkpoint.name}):"
            " --resume continues it, --overwrite starts again"
        )
    return None


def load_data(cfg: TrainConfig) -> tuple[Prepared, Prepared | None]:
    train = prepare_split(cfg.train_ds_id, cfg.train_ds_split, revision=cfg.train_ds_revision)
    source = cfg.eval_source()
    if source is None or cfg.eval_ds_split is None:
        return train, None
    revision = cfg.train_ds_revision if source == cfg.train_ds_id else None
    try:
        evals = prepare_split(source, cfg.eval_ds_split, revision=revision)
    except DataError as e:
        raise DataError(f"{e} (eval split; --eval-ds-split '' trains without one)") from None
    return train, evals


def train(cfg: TrainConfig) -> TrainResult:
    """Fine-tune ``cfg.base_model_id`` on ``cfg.train_ds_id`` and write the adapter folder."""
    began = time.perf_counter()
    created_at = datetime.now(UTC)
    placement = place(cfg)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    train_data, eval_data = load_data(cfg)
    cfg = pin_version(cfg, default_version(created_at, train_data.loaded.content_hash))
    resume_from = check_output_dir(cfg)
    if cfg.publish_event:
        check_bus(cfg.bus)
    base = load_base(cfg, placement)
    trainer = build_trainer(
        cfg,
        placement,
        base.model,
        base.tokenizer,
        train_data.dataset,
        eval_data.dataset if eval_data else None,
    )
    log.info(
        "training %s on %d rows of %s [%s] on %s%s",
        cfg.base_model_id,
        train_data.rows,
        cfg.train_ds_id,
        cfg.train_ds_split,
        placement.device,
        f", resuming from {resume_from.name}" if resume_from else "",
    )
    warn_if_overfitting(cfg, train_data.rows, trainer.args.world_size)
    resumed_step = _step_of(resume_from)
    output, eval_loss = run_trainer(trainer, placement, resume_from, has_eval=eval_data is not None)
    trainer.save_model(str(cfg.output_dir))  # every process: some parallel modes gather
    if not trainer.is_world_process_zero():
        return TrainResult(cfg.output_dir, None)

    budgets = [c for c in trainer.callback_handler.callbacks if hasattr(c, "hit")]
    card = make_card(
        cfg,
        placement,
        base,
        trainer,
        train_loss=output.training_loss,
        eval_loss=eval_loss,
        created_at=created_at,
        train_data=train_data,
        eval_data=eval_data,
        resumed_step=resumed_step,
    )
    if budgets:
        card.time_budget = TimeBudget(seconds=cfg.max_time_s, hit=budgets[0].hit)
    del trainer, base
    _free_memory()
    finish(cfg, placement, card, began)
    return TrainResult(cfg.output_dir, card)


# Passes over the same rows beyond which an adapter learns them by heart rather than the task.
MANY_EPOCHS = 10.0


def planned_epochs(cfg: TrainConfig, rows: int, world_size: int = 1) -> float:
    """How many times training will see each row: ``num_train_epochs``, or what ``max_steps``
    make of ``rows`` with the Trainer's steps per epoch (batches per device, rounded up, then
    optimizer steps of ``gradient_accumulation_steps`` batches, rounded up)."""
    if cfg.max_steps <= 0 or rows <= 0:
        return cfg.num_train_epochs
    batches = math.ceil(rows / (cfg.per_device_train_batch_size * world_size))
    return cfg.max_steps / math.ceil(batches / cfg.gradient_accumulation_steps)


def warn_if_overfitting(cfg: TrainConfig, rows: int, world_size: int = 1) -> None:
    epochs = planned_epochs(cfg, rows, world_size)
    if epochs > MANY_EPOCHS:
        log.warning(
            "training %d rows for %.0f epochs: the adapter will likely memorize them rather than "
            "learn the task (more pairs, or fewer --max-steps / --num-train-epochs)",
            rows,
            epochs,
        )


def run_trainer(
    trainer: Any, placement: Placement, resume_from: Path | None, *, has_eval: bool
) -> tuple[Any, float | None]:
    """Train (from ``resume_from`` when given), then the eval loss; running out of memory is a
    TrainError that says what to lower."""
    import torch

    try:
        with library_warnings_quiet():
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            eval_loss = trainer.evaluate()["eval_loss"] if has_eval else None
    except torch.OutOfMemoryError:
        raise TrainError(
            f"out of {placement.device} memory at step {trainer.state.global_step}: lower"
            " --per-device-train-batch-size (raise --gradient-accumulation-steps to keep the"
            " batch) or --max-length, or use --gradient-checkpointing / --load-in-4bit;"
            " --resume continues from the last checkpoint"
        ) from None
    return output, eval_loss


def make_card(
    cfg: TrainConfig,
    placement: Placement,
    base: BaseModel,
    trainer: Any,
    *,
    train_loss: float,
    eval_loss: float | None,
    created_at: datetime,
    train_data: Prepared,
    eval_data: Prepared | None,
    resumed_step: int | None,
) -> ModelCard:
    """The model card of a finished run (wall time, merge and Hub filled later)."""
    history = trainer.state.log_history
    return ModelCard(
        format=FORMAT,
        version=cfg.version,
        created_at=created_at.isoformat(timespec="seconds"),
        base_model=BaseModelRef(id=base.model_id, revision=base.revision, sha=base.sha),
        dataset=_data_card(train_data),
        eval_dataset=_data_card(eval_data) if eval_data else None,
        hyperparameters=hyperparameters(
            cfg, bf16=placement.bf16, gradient_checkpointing=placement.gradient_checkpointing
        ),
        metrics=Metrics(
            train_loss=train_loss,
            final_loss=next((h["loss"] for h in reversed(history) if "loss" in h), None),
            eval_loss=eval_loss,
            loss_curve=[(h["step"], h["loss"]) for h in history if "loss" in h],
            eval_loss_curve=[(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h],
        ),
        training=Training(
            global_step=trainer.state.global_step,
            epochs=trainer.state.epoch,
            resumed_from_step=resumed_step,
            device=placement.device,
            world_size=trainer.args.world_size,
            wall_time_s=None,
        ),
        adapter=AdapterFiles(format="peft-lora", merged=None),
        hub=None,
        libraries=library_versions(),
    )


def finish(cfg: TrainConfig, placement: Placement, card: ModelCard, began: float) -> None:
    """After the adapter is saved: merge, drop the checkpoints, write the card, push, publish."""
    version = card.version or ""
    assert card.base_model and card.adapter and card.training  # make_card fills them
    if cfg.merge:
        revision = card.base_model.sha or cfg.base_model_revision
        card.adapter.merged = str(merge_adapter(cfg, placement, revision))
    if not cfg.keep_checkpoints:
        shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)
    card.training.wall_time_s = round(time.perf_counter() - began, 3)
    write_card(cfg.output_dir, card)
    plot = write_loss_plot(cfg.output_dir, card)
    log.info("adapter %s written to %s (loss curve: %s)", version, cfg.output_dir, plot)
    # From here on the adapter is safe on disk: a failure says so, so nobody trains it again.
    saved = f"adapter {version} is saved in {cfg.output_dir}, but"
    if cfg.push_to_hub:
        # The card pushed with the adapter cannot name its own commit; the local one does.
        try:
            card.hub = push_adapter(cfg, cfg.output_dir, version)
        except TrainError as e:
            raise TrainError(f"{saved} {e}") from None
        write_card(cfg.output_dir, card)
        log.info("pushed to %s at %s, tag %s", cfg.push_to_hub, card.hub["revision"], version)
    if cfg.publish_event:
        try:
            event_id = publish_completed(cfg.bus, cfg.output_dir, card)
        except StandbyError as e:  # BusError, or ConfigError for a bad bus URL
            raise TrainError(f"{saved} publishing {TOPIC} failed: {e}") from None
        log.info("published %s (%s) on %s", TOPIC, event_id, safe_url(cfg.bus))


def merge_adapter(cfg: TrainConfig, placement: Placement, revision: str | None) -> Path:
    """Base + adapter folded into one model (``merge_and_unload``) saved in ``merged/``; the
    base is loaded again in full precision, so this works after QLoRA too."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if placement.bf16 else torch.float32
    path = model_path(cfg.base_model_id)
    base = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
    with library_warnings_quiet():
        merged = PeftModel.from_pretrained(base, str(cfg.output_dir)).merge_and_unload()
    merged.save_pretrained(str(cfg.merged_dir))
    AutoTokenizer.from_pretrained(str(cfg.output_dir)).save_pretrained(str(cfg.merged_dir))
    return cfg.merged_dir


def _data_card(prepared: Prepared) -> DataRef:
    loaded = prepared.loaded
    return DataRef(
        source=loaded.source,
        split=loaded.split,
        revision=loaded.revision,
        snapshot_id=loaded.snapshot_id,
        content_hash=loaded.content_hash,
        rows=prepared.rows,
        skipped_rows=prepared.skipped,
    )


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else None


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
