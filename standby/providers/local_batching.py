"""The local provider's generation worker: one thread, one bounded queue, batched ``generate()``.

Requests wait in a bounded queue; the worker takes the oldest one plus up to
``max_batch_size - 1`` others with the same sampling settings, left-pads their prompts and runs
one ``generate()``. A ``StoppingCriteria`` sees every new token of every row: it stops each row on
its own (end of turn, stop string, its token limit, cancellation) and streams each row's text to
its request's ``asyncio.Queue`` through ``loop.call_soon_threadsafe`` (``local_rows``).

Adapters are swapped by the same thread, between two batches (``swap_adapter``): a job keeps the
adapter that was serving when it was submitted, batches never mix adapters, and an adapter is
unloaded once no job needs it any more. A promotion therefore fails no request, and every request
is answered by one adapter from its first token to its last.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from standby.errors import BackendBusy, UpstreamError, one_line
from standby.hf_loading import library_warnings_quiet
from standby.protocol import ChatRequest, Delta, Usage
from standby.providers.local_controls import Controls, RowControls
from standby.providers.local_grammar import Grammars
from standby.providers.local_rows import Job, RowDecoder, Rows, WorkerStats

log = logging.getLogger("standby.providers.local")


@dataclass(frozen=True, slots=True)
class Swap:
    """Load ``path`` (at ``revision``) as adapter ``name`` and serve new requests with it."""

    name: str
    path: str
    revision: str | None
    done: Future[None]


class GenerationWorker:
    """Owns the model after loading: one daemon thread runs every ``generate()``."""

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        render: Callable[[ChatRequest], list[int]],
        *,
        max_batch_size: int,
        max_queue: int,
        max_new_tokens: int,
        adapter: str | None = None,
        tool_eos: frozenset[int] = frozenset(),
        grammars: Grammars | None = None,
    ) -> None:
        """``adapter`` names the LoRA adapter ``model`` (a PeftModel) already serves, if any;
        ``tool_eos`` are the tokens that also end the answer to a request with tools (where
        the model stops to wait for a tool's result); ``grammars`` enforce ``response_format``
        (``local_grammar``) and spell tokens for logprobs."""
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.render = render
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_new_tokens = max_new_tokens
        self.stats = WorkerStats()
        self.grammars = grammars
        gen = model.generation_config
        self.eos = eos_tokens(model, tokenizer)
        pad = gen.pad_token_id if gen.pad_token_id is not None else tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else min(self.eos, default=0))
        self.tool_eos = self.eos | tool_eos
        # Gemma 4's config holds the text model's in text_config (get_text_config: either).
        text_config = model.config.get_text_config()
        self.max_positions: int | None = getattr(text_config, "max_position_embeddings", None)
        self.vocab_size: int = text_config.vocab_size
        self.active = adapter  # the adapter new jobs get
        self._pending: collections.deque[Job] = collections.deque()
        self._swaps: collections.deque[Swap] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running: Rows | None = None
        self._thread = threading.Thread(target=self._run, name=f"standby-local-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def full(self) -> bool:
        return len(self._pending) >= self.max_queue

    def submit(self, job: Job) -> None:
        """Queue ``job`` or raise ``BackendBusy`` at once when ``max_queue`` requests wait."""
        with self._cond:
            if self._stopping or not self._thread.is_alive():
                raise UpstreamError(self.name, "local model is closed")
            if len(self._pending) >= self.max_queue:
                raise BackendBusy(self.name, f"queue full ({self.max_queue} requests waiting)")
            job.adapter = self.active
            self._pending.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The consumer went away: drop the job if it still waits; its row stops otherwise."""
        job.cancelled = True
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return
            self.stats.cancelled += 1

    def swap_adapter(self, name: str, path: str, revision: str | None = None) -> Future[None]:
        """Ask the worker to load adapter ``name`` from ``path`` before its next batch and give
        it every job submitted after that; the future ends when new jobs get it (or with the
        load error, the serving adapter unchanged)."""
        done: Future[None] = Future()
        with self._cond:
            if self._stopping or not self._thread.is_alive():
                raise UpstreamError(self.name, "local model is closed")
            self._swaps.append(Swap(name, path, revision, done))
            self._cond.notify()
        return done

    def stop(self) -> None:
        """Fail waiting jobs, stop running rows, end the thread (blocks until it has)."""
        with self._cond:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            if self._running is not None:
                self._running.closing = True
                for job in self._running.jobs:
                    job.send(UpstreamError(self.name, "local model closed during generation"))
                    job.cancelled = True  # nothing after the error
            self._cond.notify_all()
        for job in waiting:
            job.send(UpstreamError(self.name, "local model closed before generation"))
        for swap in self._swaps:
            swap.done.set_exception(UpstreamError(self.name, "local model closed"))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _take_batch(self) -> list[Job] | Swap | None:
        """The next swap, else the oldest job plus others with its sampling and adapter."""
        with self._cond:
            while not self._pending and not self._swaps and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            if self._swaps:
                return self._swaps.popleft()
            first = self._pending.popleft()
            batch = [first]
            for job in list(self._pending):
                if len(batch) >= self.max_batch_size:
                    break
                if job.sampling == first.sampling and job.adapter == first.adapter:
                    self._pending.remove(job)
                    batch.append(job)
            return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            if isinstance(batch, Swap):
                self._swap(batch)
                continue
            try:
                self._generate(batch)
            except Exception as e:  # the boundary: nothing raw escapes to a request
                log.exception("local generation failed")
                err = UpstreamError(self.name, f"generation failed: {one_line(e)}")
                for job in batch:
                    if not job.finished:
                        job.send(err)
            finally:
                self._running = None
                self._unload_unused()

    def _swap(self, swap: Swap) -> None:
        try:
            self.model = load_adapter(self.model, swap.path, swap.name, swap.revision)
        except Exception as e:  # a bad adapter leaves the serving one in place
            log.error("%s: cannot load adapter %s: %s", self.name, swap.path, one_line(e))
            swap.done.set_exception(UpstreamError(self.name, f"cannot load adapter: {one_line(e)}"))
            return
        with self._cond:
            self.active = swap.name
        self.stats.swaps += 1
        self._unload_unused()
        swap.done.set_result(None)

    def _unload_unused(self) -> None:
        """Delete every loaded adapter that is neither serving nor needed by a waiting job."""
        loaded = getattr(self.model, "peft_config", None)
        if not loaded:
            return
        with self._cond:
            needed = {self.active, *(job.adapter for job in self._pending)}
        unused = [n for n in loaded if n not in needed]
        if not unused:
            return
        try:
            if self.active is not None and self.model.active_adapter in unused:
                self.model.set_adapter(self.active)  # peft warns when the active one goes
            for name in unused:
                self.model.delete_adapter(name)
        except Exception as e:  # memory is all that is lost: keep serving
            log.error("%s: cannot unload adapters %s: %s", self.name, unused, one_line(e))

    @contextlib.contextmanager
    def _adapter(self, name: str | None) -> Iterator[None]:
        """Generate with adapter ``name`` (None: the base model alone)."""
        if not hasattr(self.model, "peft_config"):
            yield
        elif name is None:
            with self.model.disable_adapter():
                yield
        else:
            if self.model.active_adapter != name:
                self.model.set_adapter(name)
            yield

    def _prepare(self, batch: list[Job]) -> tuple[list[Job], list[list[int]]]:
        """Render each prompt; a job whose prompt cannot be built fails alone."""
        jobs, prompts = [], []
        for job in batch:
            if job.cancelled:
                continue
            try:
                ids = self.render(job.request)
            except UpstreamError as e:
                job.send(e)
                continue
            if self.max_positions is not None and len(ids) >= self.max_positions:
                job.send(
                    UpstreamError(
                        self.name,
                        f"prompt has {len(ids)} tokens; the model takes {self.max_positions}",
                    )
                )
                continue
            try:
                job.controls = RowControls.of(job.request, self.grammars, _prefix(job.request))
            except ValueError as e:
                job.send(UpstreamError(self.name, str(e)))
                continue
            job.prompt_len = len(ids)
            jobs.append(job)
            prompts.append(ids)
        return jobs, prompts

    def _limit(self, job: Job) -> int:
        limit = min(job.request.max_tokens or self.max_new_tokens, self.max_new_tokens)
        if self.max_positions is not None:
            limit = min(limit, self.max_positions - job.prompt_len)
        return max(1, limit)

    def _generate(self, batch: list[Job]) -> None:
        jobs, prompts = self._prepare(batch)
        if not jobs:
            return
        self.stats.batches += 1
        self.stats.batch_sizes[len(jobs)] += 1
        decoders = [
            RowDecoder(
                self.tokenizer,
                job.request.stop,
                self.tool_eos if job.tools else self.eos,
                self._limit(job),
                skip_special=not job.tools,
            )
            for job in jobs
        ]
        controls = Controls(
            [job.controls or RowControls.of(job.request, None) for job in jobs],
            self.vocab_size,
            self.model.device,
            self._token_bytes,
        )
        rows = Rows(jobs, decoders, self.stats, controls if controls.active else None)
        with self._cond:
            if self._stopping:
                return
            self._running = rows
        width = max(len(p) for p in prompts)
        input_ids = [[self.pad] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        device = self.model.device
        config = self._generation_config(jobs[0].request, max(d.limit for d in decoders))
        seed = jobs[0].request.seed
        if seed is not None and config.do_sample:
            torch.manual_seed(seed)
        with torch.inference_mode(), self._adapter(jobs[0].adapter):
            self.model.generate(
                input_ids=torch.tensor(input_ids, device=device),
                attention_mask=torch.tensor(mask, device=device),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([rows]),
                logits_processor=LogitsProcessorList([controls] if controls.active else []),
            )
        for i, (job, dec, done) in enumerate(zip(jobs, decoders, rows.done, strict=True)):
            if not done and not job.finished and not job.cancelled:  # generate() ended first
                usage = Usage(prompt_tokens=job.prompt_len, completion_tokens=dec.tokens)
                end = Delta(text=dec.flush(), finish_reason="length", usage=usage)
                end.logprobs = rows.logprobs(i)
                job.send(end)

    def _token_bytes(self, token: int) -> bytes:
        if self.grammars is not None:
            return self.grammars.token_bytes(token)
        text: str = self.tokenizer.decode([token], clean_up_tokenization_spaces=False)
        return text.encode()

    def _generation_config(self, request: ChatRequest, max_new_tokens: int) -> Any:
        """The model's own generation config, with the request's sampling settings on top:
        temperature None keeps the model's default, 0 means greedy."""
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.eos_token_id = sorted(self.eos)
        config.pad_token_id = self.pad
        config.return_dict_in_generate = False
        if request.temperature is not None:
            config.do_sample = request.temperature > 0
            if config.do_sample:
                config.temperature = request.temperature
        if not config.do_sample:
            config.temperature = config.top_p = config.top_k = None
        elif request.top_p is not None:
            config.top_p = request.top_p
        return config


def eos_tokens(model: Any, tokenizer: Any) -> frozenset[int]:
    """The tokens that end the model's turn (its generation config's, else the tokenizer's)."""
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    return frozenset([eos] if isinstance(eos, int) else eos or [])


def _prefix(request: ChatRequest) -> str:
    """The partial answer a continued request's output follows (a grammar must accept it)."""
    return request.messages[-1].content if request.continue_final else ""


def load_adapter(model: Any, path: str, name: str, revision: str | None = None) -> Any:
    """``model`` with LoRA adapter ``name`` loaded from ``path`` (a PeftModel: the base model is
    wrapped on the first load, then adapters are added to it); the active adapter is unchanged
    (the base model's own weights when it was a plain model)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        with library_warnings_quiet():
            model.load_adapter(path, adapter_name=name, revision=revision, is_trainable=False)
        return model
    with library_warnings_quiet():
        wrapped = PeftModel.from_pretrained(model, path, adapter_name=name, revision=revision)
    wrapped.eval()
    return wrapped
