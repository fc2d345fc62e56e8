"""Configuration: pydantic models (unknown keys rejected), loaded once from YAML with
``${ENV_VAR}`` interpolation, validated at start-up.

A bad file fails with one line: ``standby.yaml: backends.gemini.timeouts.connect_s: Input
should be greater than 0``.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from standby.errors import ConfigError, first_problem, validation_message
from standby.openai_models import ReasoningEffort
from standby.scrub import scrub_config, secret_inputs

M = TypeVar("M", bound=BaseModel)
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(Strict):
    """``requests_per_s`` sustained, up to ``burst`` at once; beyond it 429 with Retry-After."""

    requests_per_s: PositiveSeconds
    burst: Annotated[int, Field(ge=1)] = 10


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1,
        description="Worker processes serving the port (`standby serve --workers`); 1 is one "
        "process, as before. More: a supervising process binds the port once and each worker "
        "accepts on it; breakers, max_concurrency and rate limits hold for all of them and "
        "/metrics sums them "
        "(docs/architecture.md, Worker processes). A `local` backend is then loaded once, in "
        "a model process the workers call over a unix socket.",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer keys clients must send; empty = no gateway auth (local use only).",
    )
    max_body_bytes: Annotated[int, Field(gt=0)] = Field(
        default=16 << 20,
        description="Largest request body; beyond it 413. 16 MiB fits an image or PDF of about "
        "12 MiB sent inline in base64 (Gemini takes up to 20 MB inline per request); a "
        "text-only deployment can set 1 MiB.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="More gateway keys, one per line: a key or its ``sha256:<hex>`` digest; "
        "``#`` starts a comment line. Re-read on SIGHUP and ``POST /admin/keys/reload``.",
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys (or ``sha256:<hex>`` digests) for the /admin endpoints; empty = "
        "/admin is off (404). Must differ from every gateway key.",
    )
    rate_limit_per_key: RateLimit | None = Field(
        default=None, description="Token bucket per gateway key (one shared bucket without auth)."
    )
    max_concurrency: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Requests in flight over all routes; beyond it a request gets 503 "
        "overloaded with Retry-After at once. None = no cap.",
    )
    body_timeout_s: PositiveSeconds = Field(
        default=30.0,
        description="The whole request body must arrive within this; a slower client (slow "
        "loris) gets 408 and its connection back.",
    )
    max_header_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=64 << 10,
        description="Largest request head (request line and headers); beyond it 431 and the "
        "connection is closed, before any key check. The openai SDK sends about 600 bytes; 64 KiB "
        "leaves room for proxies' and tracing headers (Envoy's default is 60 KiB, h11's 16 KiB) "
        "and bounds the memory one connection can hold before its request is read.",
    )
    max_headers: Annotated[int, Field(ge=1)] = Field(
        default=100,
        description="Most header lines in a request; beyond it 431 and the connection is "
        "closed, before any key check. The openai SDK sends 17; 100 is Apache's default.",
    )
    header_timeout_s: PositiveSeconds = Field(
        default=10.0,
        description="The request line and headers must arrive within this of the connection "
        "opening (or, kept alive, of the previous response); a slower client (slow loris) gets "
        "408, or is closed if it sent nothing. A client sends its head in one write: 10 s only "
        "cuts clients that stall.",
    )
    send_timeout_s: PositiveSeconds = Field(
        default=30.0,
        description="While bytes of an answer wait for the client (its socket buffers full), "
        "it must take at least 16 KiB of them (or all) in each such period; a client that "
        "does not is disconnected, its stream ends and its slot and buffers are freed "
        "(docs/reliability.md, a client that stops reading).",
    )
    shutdown_grace_s: PositiveSeconds = Field(
        default=30.0,
        description="On SIGTERM, how long in-flight requests (streams too) may take to finish "
        "before their connections are closed; captured answers are drained after that.",
    )

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _no_blank_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(not k.get_secret_value().strip() for k in keys):
            raise ValueError("an API key is empty (is its environment variable set?)")
        return keys


class Timeouts(Strict):
    """Per-backend limits, for whole answers as for streams (failover reads both as a stream):
    the first piece within ``first_token_s``, each next one within ``idle_s``, all of it within
    ``total_s``; ``connect_s`` is the HTTP client's."""

    connect_s: PositiveSeconds = 2.0
    first_token_s: PositiveSeconds = 10.0
    idle_s: PositiveSeconds = 10.0
    total_s: PositiveSeconds = 60.0


class BreakerConfig(Strict):
    """Open after ``failures`` consecutive failures, or when at least ``min_requests`` calls in
    ``window_s`` failed at ``failure_ratio`` or more; stay open ``cooldown_s`` (or the
    backend's Retry-After, if longer, up to ``max_cooldown_s``); then let one probe through."""

    failures: Annotated[int, Field(ge=1)] = 5
    window_s: PositiveSeconds = 30.0
    failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Field(ge=1)] = 20
    cooldown_s: PositiveSeconds = 30.0
    max_cooldown_s: PositiveSeconds = 300.0


class UpstreamLimits(Strict):
    """Caps on what a backend may send back. Going over one stops the read at once: the
    backend failed (reason ``too_large``, the breaker counts it) and the next one answers, so
    a broken or hostile server cannot fill the gateway's memory. The defaults are far above
    any real answer; each cap is held per request, so the memory at stake is the cap times the
    requests in flight to that backend."""

    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=64 << 20,
        description="An answer read whole (embeddings; a chat answer, whole or not, is read "
        "as a stream), after decompression. 64 MiB is 7 times "
        "an embeddings call of 100 vectors (embeddings.max_batch's default) of 4,096 floats "
        "as JSON text (about 22 bytes a float), and holds answers with inline images; raise "
        "it when raising embeddings.max_batch past 700 or so.",
    )
    max_event_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=32 << 20,
        description="One line of a streamed answer (one server-sent event's data). Text "
        "chunks are a few KiB; 32 MiB leaves room for an event carrying a whole generated "
        "image inline (a 4K PNG in base64).",
    )
    max_stream_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=256 << 20,
        description="All of one streamed answer. The longest answer Gemini or vLLM write, "
        "65,536 tokens with top-20 logprobs on each (about 1.5 KiB a token), is about 96 MiB; "
        "256 MiB holds that twice over, so only an endless stream stops here. Raise it for "
        "several choices (n) with logprobs.",
    )


class _Backend(Strict):
    timeouts: Timeouts = Timeouts()
    breaker: BreakerConfig | None = None


class _HTTPBackend(_Backend):
    """A backend the gateway reads over HTTP itself, so it can cap what comes back."""

    limits: UpstreamLimits = UpstreamLimits()


class EmbeddingConfig(Strict):
    """Makes a backend an embedding model, served on ``POST /v1/embeddings`` by routes of
    ``kind: embeddings``. ``space`` names the vector space its vectors live in: backends of
    one route must share it (vectors of two models in one index corrupt it), so failover
    only moves between backends that give interchangeable vectors."""

    space: Annotated[str, Field(min_length=1)] = Field(
        description="The embedding space: the same name only for backends whose vectors are "
        "interchangeable (the same model, served twice)."
    )
    max_batch: Annotated[int, Field(ge=1)] = Field(
        default=100,
        description="Inputs per call to the backend; a request with more is sent in several "
        "calls at once (Gemini's batchEmbedContents takes up to 100).",
    )


class GeminiEmbeddingConfig(EmbeddingConfig):
    task_type: (
        Literal[
            "SEMANTIC_SIMILARITY",
            "CLASSIFICATION",
            "CLUSTERING",
            "RETRIEVAL_DOCUMENT",
            "RETRIEVAL_QUERY",
            "CODE_RETRIEVAL_QUERY",
            "QUESTION_ANSWERING",
            "FACT_VERIFICATION",
        ]
        | None
    ) = Field(default=None, description="Gemini's taskType for every input; None: the model's.")


class SafetySetting(Strict):
    """One of Gemini's ``safetySettings``: block answers at ``threshold`` in ``category`` (the
    names of google-genai's ``HarmCategory`` and ``HarmBlockThreshold``)."""

    category: Literal[
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
        "HARM_CATEGORY_JAILBREAK",
        "HARM_CATEGORY_IMAGE_HATE",
        "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT",
        "HARM_CATEGORY_IMAGE_HARASSMENT",
        "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT",
    ]
    threshold: Literal[
        "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"
    ]


class GeminiBackend(_HTTPBackend):
    """Google Gemini over its REST API (``generateContent`` / ``streamGenerateContent``)."""

    type: Literal["gemini"]
    model: str
    api_key: SecretStr | None = None
    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: str = "v1beta"
    on_blocked: Literal["content_filter", "fallback"] = "content_filter"
    embeddings: GeminiEmbeddingConfig | None = Field(
        default=None, description="Set for an embedding model (gemini-embedding-001, say)."
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description="The effort for requests that send no reasoning_effort (mapped to the "
        "model's thinkingLevel or thinkingBudget as docs/parameters.md says); None: the model's "
        "own default.",
    )
    safety_settings: list[SafetySetting] = Field(
        default_factory=list,
        description="Gemini's safetySettings, sent with every request: a threshold per harm "
        "category; categories left out keep Gemini's defaults.",
    )

    @field_validator("safety_settings")
    @classmethod
    def _one_threshold_per_category(cls, settings: list[SafetySetting]) -> list[SafetySetting]:
        seen = [s.category for s in settings]
        twice = next((c for c in seen if seen.count(c) > 1), None)
        if twice is not None:
            raise ValueError(f"{twice} is given twice (one threshold per category)")
        return settings


Modality = Literal["text", "image", "audio", "file"]


def _text_only() -> list[Modality]:
    return ["text"]


MODALITIES_HELP = (
    "What the model reads: text, and image, audio, file (PDF) when listed; a request with "
    "media it cannot read skips this backend (reason unsupported). Media is forwarded as "
    "OpenAI content parts (image_url / input_audio / file, inline base64)."
)


class OpenAIBackend(_HTTPBackend):
    """Any OpenAI-compatible server: vLLM, TGI's Messages API, ``transformers serve``, Ollama."""

    type: Literal["openai"]
    base_url: str
    model: str
    api_key: SecretStr | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    embeddings: EmbeddingConfig | None = Field(
        default=None, description="Set for an embedding model (its /embeddings endpoint)."
    )
    tools: bool = Field(
        default=True,
        description="The server can call tools; false (vLLM without --enable-auto-tool-choice, "
        "TGI without grammar support) skips this backend for requests that use tools.",
    )
    modalities: list[Modality] = Field(default_factory=_text_only, description=MODALITIES_HELP)
    structured_output: Literal["openai", "tgi", "none"] = Field(
        default="openai",
        description="How the server takes response_format: openai (vLLM, OpenAI, Ollama: "
        "OpenAI's shape), tgi (TGI's Messages API: a JSON grammar, json_schema only), none "
        "(it cannot, e.g. transformers serve: requests with a response_format skip this "
        "backend).",
    )


class TGIBackend(_HTTPBackend):
    """Text Generation Inference's native ``/generate_stream`` via huggingface_hub."""

    type: Literal["tgi"]
    base_url: str
    api_key: SecretStr | None = None
    chat_template_model: str | None = Field(
        default=None,
        description="Local path or Hub id whose tokenizer chat template renders the prompt; "
        "default: Gemma's turn format.",
    )
    max_new_tokens: Annotated[int, Field(ge=1)] = 512
    structured_output: bool = Field(
        default=True,
        description="The server compiles grammars; false (TGI started with "
        "--disable-grammar-support) skips this backend for requests with a response_format.",
    )


class LiteLLMBackend(_Backend):
    """Any provider litellm knows (``model`` in litellm's ``provider/name`` form)."""

    type: Literal["litellm"]
    model: str
    api_key: SecretStr | None = None
    api_base: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    tools: bool = Field(
        default=True,
        description="The model can call tools through litellm; false skips this backend for "
        "requests that use tools.",
    )
    modalities: list[Modality] = Field(default_factory=_text_only, description=MODALITIES_HELP)
    structured_output: bool = Field(
        default=True,
        description="Forward response_format where litellm takes it for this provider; false "
        "(a server that ignores it) skips this backend for requests with a response_format.",
    )


class LocalBackend(_Backend):
    """In-process transformers (+ peft adapter): the embedded default fallback."""

    type: Literal["local"]
    model: str = Field(description="Local path or Hub id of the base model.")
    revision: str | None = None
    adapter: str | None = Field(default=None, description="Path or Hub id of a LoRA adapter.")
    adapter_revision: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: Annotated[int, Field(ge=1)] = 8
    max_queue: Annotated[int, Field(ge=1)] = 64
    max_new_tokens: Annotated[int, Field(ge=1)] = 256
    threads: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="torch intra-op threads (process-wide); None keeps torch's default. "
        "Small models on a shared CPU run several times faster with 1.",
    )
    timeouts: Timeouts = Timeouts(first_token_s=30, idle_s=30, total_s=120)


BackendConfig = Annotated[
    GeminiBackend | OpenAIBackend | TGIBackend | LiteLLMBackend | LocalBackend,
    Field(discriminator="type"),
]
# Every backend ``type`` (read off the union: a new backend kind is added there and in
# ``providers.base.PROVIDERS``, nowhere else).
BACKEND_TYPES = frozenset(
    kind
    for model in get_args(get_args(BackendConfig)[0])
    for kind in get_args(model.model_fields["type"].annotation)
)


class RouteConfig(Strict):
    backends: Annotated[list[str], Field(min_length=1)]
    kind: Literal["chat", "embeddings"] = Field(
        default="chat",
        description="chat: POST /v1/chat/completions; embeddings: POST /v1/embeddings, every "
        "backend an embedding backend of one space.",
    )
    max_inputs: Annotated[int, Field(ge=1)] = Field(
        default=2048, description="Embeddings: inputs per request; more is a 400."
    )
    max_input_chars: Annotated[int, Field(ge=1)] = Field(
        default=1_000_000,
        description="Embeddings: characters of all inputs together; more is a 400.",
    )
    capture: bool = Field(default=True, description="Capture this route's answers.")
    max_concurrency: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Requests in flight on this route; beyond it 503 at once."
    )


class CaptureConfig(Strict):
    """Every answered request becomes an ``inference.completed`` event on the bus, written in
    batches by the gateway's capture writer process: the request path never waits on storage."""

    enabled: bool = True
    bus: str = Field(
        default="sqlite:///./.standby/events.db",
        description="sqlite:///path (embedded default) or redis://host:port/db",
    )
    queue_size: Annotated[int, Field(ge=1)] = Field(
        default=10_000,
        description="Answers the gateway buffers for its writer; beyond: dropped and counted.",
    )
    batch_size: Annotated[int, Field(ge=1)] = 256
    flush_interval_s: PositiveSeconds = Field(
        default=0.2, description="The flush window: how long a captured answer may wait unwritten."
    )
    redact_defaults: bool = Field(
        default=True, description="Redact e-mails, phones, cards, bearer tokens, API keys."
    )
    redact_patterns: list[str] = Field(default_factory=list, description="Extra regexes.")
    drain_timeout_s: PositiveSeconds = 10.0

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"invalid regex {p!r}: {e}") from None
        return patterns


class MediaConfig(Strict):
    """Images, audio and files in requests (the ``media:`` section). An ``http(s)`` image URL
    is fetched by the gateway before any backend is called (``standby.gateway.fetch``): only
    public addresses, unless the host is in ``allow_hosts``."""

    fetch_urls: bool = Field(
        default=True,
        description="Fetch http(s) image URLs; false: such a part is a 400 (send data: URLs).",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or IP literals, exact match) fetched even when they resolve "
        "to loopback, private, link-local or other non-public addresses.",
    )
    max_bytes: Annotated[int, Field(gt=0)] = Field(
        default=10 << 20, description="Largest image fetched from one URL; beyond it 400."
    )
    timeout_s: PositiveSeconds = Field(
        default=10.0, description="One URL (resolving, connecting, redirects, body) within this."
    )
    max_urls: Annotated[int, Field(ge=1)] = Field(
        default=8, description="Image URLs one request may carry."
    )
    keep_in_capture: bool = Field(
        default=False,
        description="Captured events keep media bytes (base64); by default only kind, type, "
        "size and sha256 digest. An event over 1 MiB is dropped, so this suits small images.",
    )

    @field_validator("allow_hosts")
    @classmethod
    def _bare_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host or any(c in host for c in "/@ ") or host.count(":") == 1:
                raise ValueError(f"{host!r} is not a bare host name or IP address")
        return [h.strip("[]").lower() for h in hosts]


Chars = Annotated[int, Field(ge=0)]


class DataConfig(Strict):
    """The ``data:`` section: pair store, held-out split, length filters, materializer batching."""

    store: str = Field(
        default="sqlite:///./.standby/pairs.db",
        description="The pair store: sqlite:///relative/path.db or sqlite:////absolute/path.db",
    )
    test_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1,
        description="Share of prompts held out in test_sft, assigned by a hash of prompt_id. "
        "A pair keeps its split for life, even if this value changes later.",
    )
    min_prompt_chars: Chars = Field(default=1, description="Shorter prompts are rejected.")
    max_prompt_chars: Chars = Field(default=32_000, description="Longer prompts are rejected.")
    min_response_chars: Chars = Field(default=1, description="Shorter answers are rejected.")
    max_response_chars: Chars = Field(default=32_000, description="Longer answers are rejected.")
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=256, description="Events the materializer reads and writes per transaction."
    )
    block_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=5.0, description="How long the materializer waits for new events per poll."
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> DataConfig:
        for what in ("prompt", "response"):
            low, high = getattr(self, f"min_{what}_chars"), getattr(self, f"max_{what}_chars")
            if low > high:
                raise ValueError(f"min_{what}_chars ({low}) is above max_{what}_chars ({high})")
        return self


class RegistryConfig(Strict):
    """Which fallback backends follow the model registry: when the pipeline (or ``standby
    models promote``) promotes a version, the gateway switches that backend to it. A ``local``
    backend hot-swaps its adapter in process; an ``openai`` backend (vLLM started with
    ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) has the adapter loaded
    through ``POST /v1/load_lora_adapter`` under the version's name, then sends new requests
    with ``model`` = that name (docs/deploy.md, Promotion)."""

    follow: list[str] = Field(
        default_factory=list,
        description="Local or openai (vLLM) backends whose adapter is the registry's serving "
        "version.",
    )
    url: str | None = Field(
        default=None, description="Where the registry lives; default: capture.bus."
    )
    poll_s: PositiveSeconds = Field(default=2.0, description="How often to check it.")
    adapter_paths: dict[str, str] = Field(
        default_factory=dict,
        description="openai backends: rewrite the start of a registered adapter path into the "
        "path the vLLM server sees (``{/data/runs: /adapters}``); the longest matching prefix "
        "wins, a path no prefix matches (or a Hub id) is sent as is.",
    )
    unload_previous: bool = Field(
        default=True,
        description="openai backends: unload the adapter of the version replaced by a "
        "promotion once no request can still use it (after the backend's timeouts.total_s).",
    )

    def served_path(self, adapter: str) -> str:
        """``adapter`` as the serving server sees it (``adapter_paths``)."""
        for prefix in sorted(self.adapter_paths, key=len, reverse=True):
            stem = prefix.rstrip("/")
            if adapter == stem or adapter.startswith(stem + "/"):
                return self.adapter_paths[prefix].rstrip("/") + adapter[len(stem) :]
        return adapter


class ResponsesConfig(Strict):
    """Stored responses of ``POST /v1/responses`` (``store``, ``previous_response_id``, ``GET`` /
    ``DELETE /v1/responses/{id}``): kept beside the event bus (a table of its SQLite file, or
    keys next to its Redis streams), under the gateway key that made them (docs/responses.md)."""

    url: str | None = Field(
        default=None, description="Where stored responses live; default: capture.bus."
    )
    retention_s: PositiveSeconds = Field(
        default=30 * 86400,
        description="A stored response is gone this long after it was made (404), and swept.",
    )
    max_stored: Annotated[int, Field(ge=1)] = Field(
        default=10_000,
        description="Stored responses per gateway key; beyond it the oldest are deleted.",
    )
    write_interval_s: Annotated[float, Field(gt=0, le=5, allow_inf_nan=False)] = Field(
        default=0.02,
        description="Finished responses are answered at once and written together this often "
        "(one transaction); until then this process serves them from memory, another waits.",
    )


class Settings(Strict):
    """The whole ``standby.yaml``."""

    server: ServerConfig = ServerConfig()
    backends: Annotated[dict[str, BackendConfig], Field(min_length=1)]
    routes: Annotated[dict[str, RouteConfig], Field(min_length=1)]
    breaker: BreakerConfig = BreakerConfig()
    capture: CaptureConfig = CaptureConfig()
    media: MediaConfig = MediaConfig()
    data: DataConfig = DataConfig()
    registry: RegistryConfig = RegistryConfig()
    responses: ResponsesConfig = ResponsesConfig()

    @field_validator("routes", mode="before")
    @classmethod
    def _route_shorthand(cls, routes: Any) -> Any:
        # `alias: [gemini, gemma]` is shorthand for `alias: {backends: [gemini, gemma]}`.
        if isinstance(routes, dict):
            return {k: {"backends": v} if isinstance(v, list) else v for k, v in routes.items()}
        return routes

    @model_validator(mode="after")
    def _routes_name_backends(self) -> Settings:
        for alias, route in self.routes.items():
            for name in route.backends:
                if name not in self.backends:
                    known = ", ".join(sorted(self.backends))
                    raise ValueError(
                        f"routes.{alias}: names backend {name!r}, which is not defined "
                        f"(defined: {known})"
                    )
            if len(set(route.backends)) != len(route.backends):
                raise ValueError(f"routes.{alias}: lists a backend twice")
            self._check_kind(alias, route)
        for name in self.registry.follow:
            if not isinstance(self.backends.get(name), LocalBackend | OpenAIBackend):
                raise ValueError(
                    f"registry.follow: {name!r} is not a local or openai backend (local ones"
                    " hot-swap the adapter, openai ones load it into vLLM at runtime; TGI needs"
                    " a restart: see docs/deploy.md, Promotion)"
                )
        return self

    def _check_kind(self, alias: str, route: RouteConfig) -> None:
        """Embedding backends serve embedding routes only, and one route one space."""
        spaces = {n: self.embedding_space(n) for n in route.backends}
        if route.kind == "chat":
            for name, space in spaces.items():
                if space is not None:
                    raise ValueError(
                        f"routes.{alias}: backend {name!r} is an embedding model (embeddings."
                        "space is set): put it in a route with kind: embeddings"
                    )
            return
        for name, space in spaces.items():
            if space is None:
                raise ValueError(
                    f"routes.{alias}: kind embeddings needs embedding backends, but {name!r} "
                    "has no embeddings.space (only gemini and openai backends can have one)"
                )
        if len(set(spaces.values())) > 1:
            named = ", ".join(f"{n}: {s}" for n, s in spaces.items())
            raise ValueError(
                f"routes.{alias}: mixes embedding spaces ({named}); failover between them "
                "would put vectors of two models in one index: give the route one space"
            )

    def embedding_space(self, backend: str) -> str | None:
        """The embedding space of ``backend``; None for a chat backend."""
        embeddings = getattr(self.backends[backend], "embeddings", None)
        return embeddings.space if isinstance(embeddings, EmbeddingConfig) else None

    @property
    def registry_url(self) -> str:
        return self.registry.url or self.capture.bus

    @property
    def responses_url(self) -> str:
        return self.responses.url or self.capture.bus

    def breaker_for(self, backend: str) -> BreakerConfig:
        return self.backends[backend].breaker or self.breaker


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, where: str) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; an unset variable without a
    default is an error (an empty secret must never silently disable auth)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = os.environ.get(name)
            if got is None:
                if default is None:
                    raise ConfigError(f"{where}: environment variable {name} is not set")
                return default
            return got

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _first_error(err: ValidationError) -> str:
    problem = first_problem(err)
    # Discriminated unions put the tag in the location ("backends.gemini.gemini.model").
    parts = problem.loc.split(".")
    if len(parts) >= 3 and parts[0] == "backends" and parts[1] and parts[2] in BACKEND_TYPES:
        problem = replace(problem, loc=".".join(parts[:2] + parts[3:]))
    return problem.line()


def parse_settings(data: Any, source: str = "<config>") -> Settings:
    """Validate an already-parsed mapping; errors name ``source``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    values: Any = None
    try:
        values = interpolate(data, "")
        return Settings.model_validate(values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except ValidationError as e:  # the line may quote a value: never one of its secrets
        line = f"{source}: {_first_error(e)}"
        raise ConfigError(scrub_config(line, secret_inputs(values))) from None


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing, unreadable or invalid file is one ConfigError line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{p}: invalid YAML: nested too deeply") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
    _check_size(data, p)
    return data


MAX_NODES = 100_000


def _check_size(data: Any, path: Path) -> None:
    """Refuse a document whose aliases expand to more than ``MAX_NODES`` values (``&a [*b,
    *b, ...]`` chains, "billion laughs"): interpolation walks the expanded tree."""
    seen = 0
    stack = [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(f"{path}: invalid YAML: more than {MAX_NODES:,} values (aliases?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_section(path: str | Path, name: str, model: type[M]) -> M:
    """One section of a ``standby.yaml`` (``data:``, ``capture:``, ``registry:``), validated
    alone: a tool that needs only it does not need the gateway's secrets (a
    ``${GEMINI_API_KEY}`` elsewhere in the file need not be set). Absent: the defaults."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    values: Any = None
    try:
        values = interpolate(raw.get(name) or {}, name)
        return model.model_validate(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except ValidationError as e:
        line = f"{path}: {validation_message(e, name)}"
        raise ConfigError(scrub_config(line, secret_inputs(values))) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a ``standby.yaml``; every failure is one ConfigError line."""
    return parse_settings(read_yaml(path), str(path))
