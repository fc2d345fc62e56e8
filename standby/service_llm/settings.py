"""Settings of the service LLM (the judge, the synthetic-data generator): the original tools'
flag names (``--service-llm-provider``, ``--service-model-name``, ``--rate-limit-per-minute``...)
plus the knobs of the client's retry and pacing. Tools subclass :class:`ServiceLLMSettings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator

from standby.config import read_yaml
from standby.errors import ConfigError
from standby.toolconfig import ToolConfig

GEN_CONFIG_KEYS = frozenset({"temperature", "top_p", "max_tokens", "max_output_tokens", "seed"})


class ServiceLLMSettings(ToolConfig):
    """Which hosted LLM serves the tool, and how hard the client may push it."""

    service_llm_provider: Literal["gemini", "litellm"] = Field(
        default="gemini",
        description="gemini (direct REST) or litellm (any model litellm knows, e.g. "
        "openai/gpt-4o, anthropic/claude-sonnet-4-5)",
    )
    service_llm_api_key: SecretStr | None = Field(
        default=None,
        description="API key; default: $GEMINI_API_KEY for gemini, litellm reads its "
        "provider's own variable (OPENAI_API_KEY...)",
    )
    service_model_name: str = Field(
        default="gemini-3.8-flash", description="Model name (litellm: provider/name)"
    )
    service_llm_base_url: str | None = Field(
        default=None,
        description="Base URL of the API (a private endpoint, or the simulator in tests)",
    )
    service_llm_gen_config_path: Path | None = Field(
        default=None,
        description="YAML generation config: temperature, top_p, max_tokens, seed",
    )
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = Field(
        default=60, description="Requests per minute, paced evenly (retries count too)"
    )
    service_llm_max_retries: Annotated[int, Field(ge=0)] = Field(
        default=6, description="Retries of a call on 429, 5xx, timeouts and broken connections"
    )
    service_llm_backoff_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="First backoff; doubles per retry, with jitter"
    )
    service_llm_max_backoff_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Longest backoff (a longer Retry-After still wins)"
    )
    service_llm_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="Limit for one call"
    )
    service_llm_reasks: Annotated[int, Field(ge=0)] = Field(
        default=3, description="Times a malformed JSON answer is asked for again"
    )

    @field_validator("service_llm_api_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: Any) -> Any:
        # A flag value is read as YAML (toolconfig): a numeric-looking key comes back a number.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and not value.strip():
            return None  # `${GEMINI_API_KEY:-}` unset: fall back to the default
        return value

    def api_key(self) -> str | None:
        """The key to send: the setting, else $GEMINI_API_KEY for gemini, else None."""
        if self.service_llm_api_key is not None:
            return self.service_llm_api_key.get_secret_value()
        if self.service_llm_provider == "gemini":
            return os.environ.get("GEMINI_API_KEY") or None
        return None

    def generation_config(self) -> dict[str, Any]:
        """The sampling settings from ``service_llm_gen_config_path`` (empty without one)."""
        path = self.service_llm_gen_config_path
        if path is None:
            return {}
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of generation settings")
        unknown = sorted(set(data) - GEN_CONFIG_KEYS)
        if unknown:
            known = ", ".join(sorted(GEN_CONFIG_KEYS))
            raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (known: {known})")
        out = dict(data)
        if "max_output_tokens" in out:
            out.setdefault("max_tokens", out.pop("max_output_tokens"))
        return out
