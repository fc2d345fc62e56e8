"""The service LLM: a hosted model used as a tool (the judge, the synthetic-data generator).

See :mod:`standby.service_llm.client` for the client and
:mod:`standby.service_llm.settings` for its settings (the original tools' flag names)."""

from standby.service_llm.client import (
    CallStats,
    JsonResult,
    ServiceLLM,
    ServiceLLMConfigError,
    ServiceLLMError,
    ServiceLLMUnavailable,
)
from standby.service_llm.jsonout import MalformedOutput, extract_json, parse_output
from standby.service_llm.pacing import Pacer, backoff_delay
from standby.service_llm.settings import ServiceLLMSettings

__all__ = [
    "CallStats",
    "JsonResult",
    "MalformedOutput",
    "Pacer",
    "ServiceLLM",
    "ServiceLLMConfigError",
    "ServiceLLMError",
    "ServiceLLMSettings",
    "ServiceLLMUnavailable",
    "backoff_delay",
    "extract_json",
    "parse_output",
]
