"""How a chat becomes a model's prompt: the one owner of that format.

The local provider, the TGI provider, the trainer and batch inference (through the local
provider) all format a chat here, so a model is served exactly as it was trained:

- System turns: kept where the model's template takes them (Gemma 4 has a system role; Gemma
  3's template folds them into the first user turn itself), else folded the same way
  (``fold_system_messages``) — by a server when the template rejects them, and by the
  trainer through ``as_served``, the same rule.
- The model's own chat template renders the turns (``render_prompt`` / ``render_text``), with
  the generation prompt for a new answer, or with the last assistant turn left open to continue
  a partial answer (``template_flags``: mid-stream failover stitches two backends' answers).
- Training marks the assistant's tokens with the template's ``{% generation %}`` markers
  (``marks_assistant_tokens``).
- With no tokenizer at hand (a TGI server without ``chat_template_model``) the prompt is
  Gemma's turn format, written out by ``gemma_prompt``.
- Tools and the tool history go to the template the way transformers' templates take them
  (``tool_chat``, ``template_tools``): OpenAI-shaped function dicts, assistant ``tool_calls``
  with their arguments as objects, ``tool`` messages with the function's ``name``. A template
  without tool support ignores ``tools`` (``renders_tools`` tells the two apart).

Nothing beyond the base modules at import (the gateway image imports this for
``template_flags``): tokenizers are passed in; jinja2 and TRL are imported on use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from standby.protocol import ChatRequest, Message

Chat = list[dict[str, str]]
ToolChat = list[dict[str, Any]]  # a Chat whose messages may carry tool calls and results

START, END = "<start_of_turn>", "<end_of_turn>"  # Gemma's turn markers


def chat_of(messages: Iterable[Message]) -> Chat:
    """A request's messages as the role/content dicts chat templates take."""
    return [{"role": m.role, "content": m.content} for m in messages]


def tool_chat(messages: Iterable[Message]) -> ToolChat:
    """A request's messages with their tool calls and results, as chat templates take them
    (a call's JSON arguments as an object; ValueError when they are not one)."""
    chat: ToolChat = []
    for m in messages:
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments(c.arguments, c.name)},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            message |= {"tool_call_id": m.tool_call_id, "name": m.name}
        chat.append(message)
    return chat


def _arguments(text: str, name: str) -> dict[str, Any]:
    value = json.loads(text or "{}")
    if not isinstance(value, dict):
        raise ValueError(f"the arguments of the call to {name!r} are not a JSON object")
    return value


def template_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The tools the template declares for ``request``: all it offers, none with
    ``tool_choice: none``. A named ``tool_choice`` declares them all too (the prompt stays the
    one the model sees, and is trained on, for every choice; the server makes it call the one
    named)."""
    if not request.tools or request.tool_choice.mode == "none":
        return None
    return [t.openai() for t in request.tools]


def renders_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template declares the tools it is given (templates
    without tool support ignore them)."""
    probe = "standby_probe_function"
    tool = {"type": "function", "function": {"name": probe, "description": "", "parameters": {}}}
    chat = [{"role": "user", "content": "Hi"}]
    text = _apply(tokenizer, chat, tools=[tool], tokenize=False, add_generation_prompt=True)
    return probe in str(text)


def fold_system_messages(messages: Sequence[Mapping[str, str]]) -> Chat:
    """Gemma has no system role: put the system text at the top of the first user message
    (a user message is added when there is none)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    prefix = "\n\n".join(system)
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{prefix}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": prefix}, *rest]


def continues(messages: Sequence[Mapping[str, Any]], continue_final: bool) -> bool:
    """True when the last message is a partial assistant answer to continue."""
    return continue_final and bool(messages) and messages[-1]["role"] == "assistant"


def template_flags(*, continue_final: bool) -> dict[str, bool]:
    """The chat-template switches for a new answer (the generation prompt) or a continued one
    (the last turn left open). The same names are vLLM's request fields for the same thing."""
    return {"add_generation_prompt": not continue_final, "continue_final_message": continue_final}


def render_prompt(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    continue_final: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Token ids of the chat, by the tokenizer's own template, ready for the model's answer.

    ``continue_final``: the last message is a partial assistant answer to continue. A template
    that rejects system messages is retried with them folded into the first user turn.
    ``tools``: OpenAI-shaped function dicts for the template to declare (``template_tools``).
    Control tokens inside message text (``<end_of_turn>`` typed by a user) stay plain text.
    """
    flags = template_flags(continue_final=continues(messages, continue_final))
    kwargs: dict[str, Any] = {
        "tokenize": True,
        "return_dict": False,
        "sanitize_control_tokens": True,
    }
    if tools:
        kwargs["tools"] = tools
    ids = _apply(tokenizer, messages, **kwargs, **flags)
    return [int(i) for i in ids]


def render_text(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], *, continue_final: bool = False
) -> str:
    """The prompt as text, for a server that tokenizes it (TGI): as ``render_prompt``, without
    the template's leading BOS, which the server's tokenizer adds itself."""
    flags = template_flags(continue_final=continues(messages, continue_final))
    text = str(_apply(tokenizer, messages, tokenize=False, **flags))
    bos = getattr(tokenizer, "bos_token", None)
    if isinstance(bos, str) and bos and text.startswith(bos):
        text = text[len(bos) :]
    return text


def _apply(tokenizer: Any, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
    import jinja2  # with the tokenizer's packages (transformers needs it for templates)

    chat = [dict(m) for m in messages]
    try:
        return tokenizer.apply_chat_template(chat, **kwargs)
    except jinja2.TemplateError:
        if not any(m["role"] == "system" for m in chat):
            raise
        return tokenizer.apply_chat_template(fold_system_messages(chat), **kwargs)


def as_served(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` as a server renders them (``_apply``): as they are when the model's template
    takes their system turns (Gemma 4 has a system role; Gemma 3's template folds it itself),
    else with the system text folded into the first user turn. The trainer formats its rows
    with this, so a model is trained on the prompt it is served."""
    import jinja2

    chat = [dict(m) for m in messages]
    if not any(m["role"] == "system" for m in chat):
        return chat
    try:
        tokenizer.apply_chat_template(chat, tokenize=False)
    except jinja2.TemplateError:
        return fold_system_messages(chat)
    return chat


def gemma_prompt(messages: Sequence[Mapping[str, str]], *, continue_final: bool) -> str:
    """Gemma's turn format, written out for a server with no tokenizer at hand: each text
    trimmed (as Gemma's template does), then system text folded; with ``continue_final`` the
    last (assistant) turn is left open, untrimmed, so the model continues it exactly."""
    open_last = continues(messages, continue_final)
    last = len(messages) - 1
    trimmed = [
        m if open_last and i == last else {**m, "content": m["content"].strip()}
        for i, m in enumerate(messages)
    ]
    chat = fold_system_messages(trimmed)
    out: list[str] = []
    for i, m in enumerate(chat):
        role = "model" if m["role"] == "assistant" else "user"
        if open_last and i == len(chat) - 1:
            out.append(f"{START}model\n{m['content']}")
            return "".join(out)
        out.append(f"{START}{role}\n{m['content'].strip()}{END}\n")
    out.append(f"{START}model\n")
    return "".join(out)


def chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's chat template, or None when it has none (a base, not an instruction-
    tuned, model)."""
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) and template else None


def marks_assistant_tokens(tokenizer: Any) -> bool:
    """True when training can find the assistant's tokens: the template marks them with
    ``{% generation %}``, or TRL has a training version of it that does."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = chat_template(tokenizer)
    if template is None:
        return False
    if has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return False
    return True
