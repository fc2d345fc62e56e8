"""What the local backend can answer, decided without the model's weights: shared by the
in-process provider (``local.LocalProvider``) and the one that forwards to the host's model
process (``local_remote.HostedLocalProvider``), so both skip a request for the same reasons.

Only the check of a ``response_format`` schema needs the model's tokenizer (``local_grammar``);
the caller passes it as ``schema_problem`` where it has one (the model process checks it again
before generating, and a schema it cannot compile comes back as ``Unsupported``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from standby.capabilities import Need, missing
from standby.protocol import ChatRequest

# Tools are decided by the model's chat template (``no_tools``) once it is loaded.
LOCAL_SUPPORTS: frozenset[Need] = frozenset(
    {"tools", "structured_output", "logprobs", "choices", "logit_bias"}
)


def version_of(ref: str, revision: str | None) -> str:
    """The ``model_version`` a model or adapter answers with: ``ref``, ``@revision`` if any."""
    return f"{ref}@{revision}" if revision else ref


def local_unsupported(
    name: str,
    request: ChatRequest,
    *,
    no_tools: str | None,
    supports: frozenset[Need],
    vocab_size: int | None,
    schema_problem: Callable[[dict[str, Any]], str | None] | None = None,
) -> str | None:
    """Why backend ``name`` (a local model) cannot answer ``request``, in a few words; None
    when it can. ``no_tools``: why its model cannot call tools (None: it can)."""
    if request.uses_tools and no_tools:
        return no_tools
    lacking = missing(request, supports | {"tools"}, f"backend {name!r}")
    if lacking is not None:
        return lacking
    fmt = request.response_format
    if fmt is not None and request.tools and request.tool_choice.mode != "none":
        return (
            f"backend {name!r} cannot hold an answer to response_format while it may "
            "call tools (send tool_choice none, or no tools)"
        )
    if fmt is not None and schema_problem is not None:
        return schema_problem(fmt)
    if request.logit_bias and vocab_size is not None:
        bad = next((t for t in request.logit_bias if not 0 <= t < vocab_size), None)
        if bad is not None:
            return (
                f"logit_bias: token id {bad} is not in the vocabulary of backend "
                f"{name!r} (0..{vocab_size - 1})"
            )
    return None
