"""In-process transformers (+ peft) provider: the embedded default fallback.

Weights load in a worker thread at ``start()``; every ``generate()`` runs on one dedicated
thread (``local_batching.GenerationWorker``), so the event loop never waits on the model.
Requests beyond ``max_queue`` waiting ones get ``BackendBusy`` at once, so the router can fail
over or answer 503 instead of queueing without bound.

Tools: a model whose chat template declares tools and whose output is Gemma 4's call syntax
(Gemma 4) answers requests with tools; for others ``unsupported`` says why, and failover skips
this backend for such requests. Tools and the tool history are rendered by the model's own
template; calls are read from the output and checked against the request (``local_tools``).

Sampling asks: ``response_format`` is enforced by a grammar (``local_grammar``; a schema it
cannot compile, or a format together with tools the model may call, is ``unsupported``);
``logit_bias``, the penalties and logprobs apply per row (``local_controls``); ``n`` runs n
rows (``local_choices``); ``seed`` seeds each batch, and requests batch only with the same
temperature, top_p and seed (so ``n`` samples of a seeded request repeat when they fit in one
batch, ``max_batch_size``).

Errors raised here: ``UpstreamError`` for a model that cannot be loaded (one line naming the
model and the cause), a prompt that cannot be rendered, or a failure inside generation;
``UpstreamProtocolError`` for a tool call that is unreadable, not allowed or does not match its
schema (or none when one is required); ``BackendBusy`` when the queue is full.
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

from standby.capabilities import Need
from standby.chat_format import (
    chat_of,
    chat_template,
    render_prompt,
    renders_tools,
    template_tools,
    tool_chat,
)
from standby.config import LocalBackend
from standby.errors import UpstreamError, one_line
from standby.hf_loading import (
    library_warnings_quiet,
    load_reason,
    looks_like_path,
    model_path,
    resolve_device,
    resolve_dtype,
)
from standby.protocol import ChatRequest, Completion, Delta, assembled
from standby.providers.hotswap import ServedModel
from standby.providers.local_batching import GenerationWorker, eos_tokens
from standby.providers.local_choices import stream_choices
from standby.providers.local_grammar import Grammars
from standby.providers.local_rows import Job, WorkerStats
from standby.providers.local_support import LOCAL_SUPPORTS, local_unsupported, version_of
from standby.providers.local_tools import RESULT_START, ToolStream, forced_prefix, tool_support

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
        self.versions: dict[str | None, str] = {None: version_of(config.model, config.revision)}
        if config.adapter:
            self.versions[DEFAULT_ADAPTER] = version_of(config.adapter, config.adapter_revision)
        self.model_version = self.versions[DEFAULT_ADAPTER if config.adapter else None]
        self.no_tools: str | None = None  # why this model cannot answer with tools (once loaded)
        self.supports: frozenset[Need] = LOCAL_SUPPORTS
        self._specials: tuple[str, ...] = ()
        self.grammars: Grammars | None = None
        self.vocab_size: int | None = None

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
        model, tokenizer, tools = await asyncio.to_thread(self._load)
        self.vocab_size = model.config.get_text_config().vocab_size
        self.grammars = await asyncio.to_thread(self._grammars, model, tokenizer)
        if self.grammars is None:
            self.supports = LOCAL_SUPPORTS - {"structured_output"}
        cfg = self.config
        self.no_tools = tool_support(tokenizer, cfg.model, tools)
        self._specials = tuple(tokenizer.all_special_tokens)
        result = tokenizer.get_vocab().get(RESULT_START)
        self.worker = GenerationWorker(
            self.name,
            model,
            tokenizer,
            self._render_with(tokenizer),
            max_batch_size=cfg.max_batch_size,
            max_queue=cfg.max_queue,
            max_new_tokens=cfg.max_new_tokens,
            adapter=DEFAULT_ADAPTER if cfg.adapter else None,
            tool_eos=frozenset(() if result is None else (result,)),
            grammars=self.grammars,
        )
        self.worker.start()
        self.load_seconds = time.perf_counter() - began
        kind = model.config.model_type  # gemma3_text, gemma4, ...: the same auto classes load both
        log.info(
            "%s: loaded %s (%s) in %.1fs", self.name, self.model_version, kind, self.load_seconds
        )

    def _load(self) -> tuple[Any, Any, bool]:
        """The model, its tokenizer, and whether its chat template declares tools."""
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
            tools = _renders_tools(tokenizer)
            model: Any = AutoModelForCausalLM.from_pretrained(
                model_path(cfg.model), revision=cfg.revision, dtype=resolve_dtype(cfg.dtype, device)
            )
            model = model.to(device)
            if cfg.adapter:
                from peft import PeftModel

                what = f"adapter {cfg.adapter!r}"
                with library_warnings_quiet():
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
        return model, tokenizer, tools

    def _grammars(self, model: Any, tokenizer: Any) -> Grammars | None:
        """The grammar compiler for ``response_format`` (None, with the reason logged, for a
        tokenizer the library cannot read: structured output is then unsupported)."""
        eos = eos_tokens(model, tokenizer)
        end = tokenizer.eos_token_id if tokenizer.eos_token_id in eos else min(eos, default=0)
        try:
            return Grammars(tokenizer, model.config.get_text_config().vocab_size, end)
        except Exception as e:  # llguidance's boundary: its tokenizer import fails
            log.warning("%s: no structured output: %s", self.name, one_line(e))
            return None

    def _render_with(self, tokenizer: Any) -> Callable[[ChatRequest], list[int]]:
        def render(request: ChatRequest) -> list[int]:
            final = request.continue_final
            try:
                if not request.uses_tools:
                    return render_prompt(tokenizer, chat_of(request.messages), continue_final=final)
                chat, tools = tool_chat(request.messages), template_tools(request)
                ids = render_prompt(tokenizer, chat, continue_final=final, tools=tools)
            except Exception as e:  # a template that cannot render this conversation
                raise UpstreamError(self.name, f"cannot render the prompt: {one_line(e)}") from e
            prefix = forced_prefix(request)
            return ids + (tokenizer.encode(prefix, add_special_tokens=False) if prefix else [])

        return render

    def ready(self) -> bool:
        return self.worker is not None and self.worker.alive and not self.worker.full()

    def unsupported(self, request: ChatRequest) -> str | None:
        return local_unsupported(
            self.name,
            request,
            no_tools=self.no_tools,
            supports=self.supports,
            vocab_size=self.vocab_size,
            schema_problem=None if self.grammars is None else self.grammars.problem,
        )

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
            version = self.versions[name] = version_of(adapter, revision)
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

    def _submit_all(self, request: ChatRequest) -> list[Job]:
        """``request.n`` jobs, one per choice; none stays queued when one cannot be."""
        jobs: list[Job] = []
        try:
            for _ in range(request.n):
                jobs.append(self._submit(request))
        except UpstreamError:
            for job in jobs:
                if self.worker is not None:
                    self.worker.cancel(job)
            raise
        return jobs

    async def complete(self, request: ChatRequest) -> Completion:
        """The stream's deltas, added up (``protocol.Assembly``): a whole answer is exactly
        what the same request streams."""
        return await assembled(request, self.stream(request))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        if request.n > 1:
            streams = [self._deltas(job) for job in self._submit_all(request)]
            async with contextlib.aclosing(stream_choices(streams)) as deltas:
                async for delta in deltas:
                    yield delta
            return
        async with contextlib.aclosing(self._deltas(self._submit(request))) as deltas:
            async for delta in deltas:
                yield delta

    async def _deltas(self, job: Job) -> AsyncGenerator[Delta, None]:
        """The job's deltas; with tools, its raw output read into text and checked calls."""
        tools = ToolStream(self.name, job.request, self._specials) if job.tools else None
        try:
            if tools is not None:  # the start of a call written for the model, if any
                for delta in tools.feed(forced_prefix(job.request)):
                    yield delta
            while True:
                item = await job.out.get()
                if isinstance(item, UpstreamError):
                    raise item
                last = item.finish_reason is not None
                if last:
                    item.model_version = self.versions.get(job.adapter, self.model_version)
                if tools is None:
                    yield item
                else:
                    for delta in _through(tools, item):
                        yield delta
                if last:
                    return
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


def _renders_tools(tokenizer: Any) -> bool:
    try:
        return renders_tools(tokenizer)
    except Exception:  # a template that cannot render the probe cannot declare tools either
        return False


def _through(tools: ToolStream, item: Delta) -> list[Delta]:
    """``item`` (raw output) read by ``tools``: text and call deltas; the last one carries
    ``item``'s finish (``tool_calls`` when calls were made), usage and version."""
    out = tools.feed(item.text)
    if item.logprobs:  # the raw tokens' logprobs, with the first piece read from them
        out = out or [Delta()]
        out[0].logprobs = item.logprobs
    if item.finish_reason is None:
        return out
    tail, reason = tools.finish(item.finish_reason)
    end = Delta(finish_reason=reason, usage=item.usage, model_version=item.model_version)
    return [*out, *tail, end]
