"""In-process transformers (+ peft) provider: the embedded default fallback.

Weights load in a worker thread at ``start()``; every ``generate()`` runs on one dedicated
thread (``local_batching.GenerationWorker``), so the event loop never waits on the model.
Requests beyond ``max_queue`` waiting ones get ``BackendBusy`` at once, so the router can fail
over or answer 503 instead of queueing without bound.

Errors raised here: ``UpstreamError`` for a model that cannot be loaded (one line naming the
model and the cause), a prompt that cannot be rendered, or a failure inside generation;
``BackendBusy`` when the queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from standby.chat_format import chat_of, chat_template, render_prompt
from standby.config import LocalBackend
from standby.errors import UpstreamError, one_line
from standby.hf_loading import (
    load_reason,
    looks_like_path,
    model_path,
    resolve_device,
    resolve_dtype,
)
from standby.protocol import ChatRequest, Completion, Delta, Usage
from standby.providers.hotswap import ServedModel
from standby.providers.local_batching import GenerationWorker, Job, WorkerStats

log = logging.getLogger("standby.providers.local")


DEFAULT_ADAPTER = "default"  # peft's name for the adapter a model is loaded with


class LocalProvider:
    """A Hugging Face causal LM (and optional LoRA adapter) served in this process."""

    def __init__(self, name: str, config: LocalBackend) -> None:
        self.name = name
        self.config = config
        self.worker: GenerationWorker | None = None
        self.load_seconds: float | None = None
        self._starting = asyncio.Lock()
        self._swapping = asyncio.Lock()
        self.adapter = config.adapter
        # What answers a job, by the worker's adapter name (None: the base model alone).
        self.versions: dict[str | None, str] = {None: _version(config.model, config.revision)}
        if config.adapter:
            self.versions[DEFAULT_ADAPTER] = _version(config.adapter, config.adapter_revision)
        self.model_version = self.versions[DEFAULT_ADAPTER if config.adapter else None]

    @property
    def stats(self) -> WorkerStats:
        """Batch and token counters of the generation thread (empty before ``start()``)."""
        return self.worker.stats if self.worker else WorkerStats()

    async def start(self) -> None:
        async with self._starting:
            if self.worker is None:
                await self._start()

    async def _start(self) -> None:
        began = time.perf_counter()
        model, tokenizer = await asyncio.to_thread(self._load)
        cfg = self.config
        self.worker = GenerationWorker(
            self.name,
            model,
            tokenizer,
            self._render_with(tokenizer),
            max_batch_size=cfg.max_batch_size,
            max_queue=cfg.max_queue,
            max_new_tokens=cfg.max_new_tokens,
            adapter=DEFAULT_ADAPTER if cfg.adapter else None,
        )
        self.worker.start()
        self.load_seconds = time.perf_counter() - began
        log.info("%s: loaded %s in %.1fs", self.name, self.model_version, self.load_seconds)

    def _load(self) -> tuple[Any, Any]:
        cfg = self.config
        what = f"model {cfg.model!r}"
        for kind, ref in (("model", cfg.model), ("adapter", cfg.adapter)):
            if ref and looks_like_path(ref) and not Path(ref).expanduser().is_dir():
                raise UpstreamError(self.name, f"{kind} {ref!r}: no such directory")
        try:
            device = resolve_device(cfg.device)
        except ValueError as e:
            raise UpstreamError(self.name, str(e)) from None
        if cfg.threads is not None:
            import torch

            torch.set_num_threads(cfg.threads)
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path(cfg.model), revision=cfg.revision)
            if chat_template(tokenizer) is None:
                raise UpstreamError(self.name, f"{what} has no chat template in its tokenizer")
            model: Any = AutoModelForCausalLM.from_pretrained(
                model_path(cfg.model), revision=cfg.revision, dtype=resolve_dtype(cfg.dtype, device)
            )
            model = model.to(device)
            if cfg.adapter:
                from peft import PeftModel

                what = f"adapter {cfg.adapter!r}"
                model = PeftModel.from_pretrained(
                    model,
                    model_path(cfg.adapter),
                    adapter_name=DEFAULT_ADAPTER,
                    revision=cfg.adapter_revision,
                )
            model.eval()
        except UpstreamError:
            raise
        except Exception as e:  # the one boundary for hub / transformers / peft / torch errors
            raise UpstreamError(self.name, f"cannot load {what}: {load_reason(e)}") from e
        return model, tokenizer

    def _render_with(self, tokenizer: Any) -> Callable[[ChatRequest], list[int]]:
        def render(request: ChatRequest) -> list[int]:
            chat = chat_of(request.messages)
            try:
                return render_prompt(tokenizer, chat, continue_final=request.continue_final)
            except Exception as e:  # a template that cannot render this conversation
                raise UpstreamError(self.name, f"cannot render the prompt: {one_line(e)}") from e

        return render

    def ready(self) -> bool:
        return self.worker is not None and self.worker.alive and not self.worker.full()

    def unsupported(self, request: ChatRequest) -> str | None:
        if request.uses_tools:
            return "the local backend does not serve tool calls yet"
        return None

    def served(self) -> ServedModel:
        """The version new requests are answered with (``hotswap.AdapterSwapping``)."""
        return ServedModel(self.model_version, self.config.model, self.adapter)

    async def swap_adapter(self, adapter: str, revision: str | None = None) -> str:
        """Serve new requests with LoRA adapter ``adapter`` (a local path or Hub id) from now
        on; requests already accepted finish on the adapter they started with. Returns the new
        model version; UpstreamError (the serving adapter unchanged) when it cannot load."""
        worker = self.worker
        if worker is None:
            raise UpstreamError(self.name, "local model is not loaded (start() not called)")
        local = model_path(adapter)
        if looks_like_path(adapter) and not await asyncio.to_thread(os.path.isdir, local):
            raise UpstreamError(self.name, f"adapter {adapter!r}: no such directory")
        async with self._swapping:
            name = f"standby_{len(self.versions)}"
            await asyncio.wrap_future(worker.swap_adapter(name, local, revision))
            version = self.versions[name] = _version(adapter, revision)
            self.adapter, self.model_version = adapter, version
        log.info("%s: now serving %s", self.name, version)
        return version

    def _submit(self, request: ChatRequest) -> Job:
        worker = self.worker
        if worker is None:
            raise UpstreamError(self.name, "local model is not loaded (start() not called)")
        job = Job(request, asyncio.get_running_loop())
        worker.submit(job)
        return job

    async def complete(self, request: ChatRequest) -> Completion:
        parts: list[str] = []
        finish: Delta | None = None
        job = self._submit(request)
        async with contextlib.aclosing(self._deltas(job)) as deltas:
            async for delta in deltas:
                parts.append(delta.text)
                finish = delta
        assert finish is not None and finish.finish_reason is not None
        return Completion(
            text="".join(parts),
            finish_reason=finish.finish_reason,
            usage=finish.usage or Usage(),
            model_version=finish.model_version,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        async with contextlib.aclosing(self._deltas(self._submit(request))) as deltas:
            async for delta in deltas:
                yield delta

    async def _deltas(self, job: Job) -> AsyncGenerator[Delta, None]:
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, UpstreamError):
                    raise item
                if item.finish_reason is not None:
                    item.model_version = self.versions.get(job.adapter, self.model_version)
                    yield item
                    return
                yield item
        finally:
            if not job.finished and self.worker is not None:
                self.worker.cancel(job)

    async def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        await asyncio.to_thread(worker.stop)
        worker.model = None
        del worker
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _version(ref: str, revision: str | None) -> str:
    return f"{ref}@{revision}" if revision else ref
