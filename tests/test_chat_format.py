"""standby.chat_format: system folding, continuation prefill, Gemma's written-out turn format,
the same prompt for the trainer and the server (the tiny Gemma's real template), and tools for
the templates that take them (the tiny Gemma 4's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from standby.chat_format import (
    chat_of,
    chat_template,
    continues,
    fold_system_messages,
    gemma_prompt,
    marks_assistant_tokens,
    render_prompt,
    render_text,
    renders_tools,
    template_flags,
    template_tools,
    tool_chat,
)
from standby.protocol import ChatRequest, Message
from standby.tool_calls import Tool, ToolCall
from standby.trainer.data import to_chat

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hi"}
ANSWER = {"role": "assistant", "content": "Hello"}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_fold_system_messages() -> None:
    assert fold_system_messages([SYSTEM, USER, ANSWER]) == [
        {"role": "user", "content": "Be brief.\n\nHi"},
        ANSWER,
    ]
    assert fold_system_messages([{"role": "system", "content": "S"}]) == [
        {"role": "user", "content": "S"}
    ]
    two = [SYSTEM, USER, {"role": "system", "content": "Late."}]
    assert fold_system_messages(two) == [{"role": "user", "content": "Be brief.\n\nLate.\n\nHi"}]
    assert fold_system_messages([USER, ANSWER]) == [USER, ANSWER]


def test_a_continuation_needs_a_final_assistant_message() -> None:
    assert continues([USER, ANSWER], True)
    assert not continues([USER, ANSWER], False)
    assert not continues([USER], True)
    assert not continues([], True)
    assert template_flags(continue_final=True) == {
        "add_generation_prompt": False,
        "continue_final_message": True,
    }
    assert template_flags(continue_final=False) == {
        "add_generation_prompt": True,
        "continue_final_message": False,
    }


def test_chat_of_a_request() -> None:
    request = ChatRequest(messages=(Message("system", "S"), Message("user", "U")))
    assert chat_of(request.messages) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
    ]


def test_gemma_prompt_folds_system_into_first_user_turn() -> None:
    chat = [SYSTEM, {"role": "user", "content": " Hi "}, {"role": "assistant", "content": "Hello!"}]
    assert gemma_prompt([*chat, {"role": "user", "content": "Again"}], continue_final=False) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nAgain<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_prompt_continue_final_leaves_the_model_turn_open() -> None:
    chat = [USER, {"role": "assistant", "content": "Hello, wor"}]
    assert gemma_prompt(chat, continue_final=True) == (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello, wor"
    )


def test_gemma_prompt_is_the_tiny_gemma_template(tokenizer: Any) -> None:
    """The written-out format and Gemma's template agree (the tiny model has Gemma's). One
    difference, on purpose: a partial answer to continue is sent untrimmed."""
    chats = [
        [SYSTEM, USER],
        [USER, ANSWER, {"role": "user", "content": " again "}],
        [SYSTEM, USER, {"role": "assistant", "content": "Hello, wor"}],
    ]
    for chat in chats:
        for cont in (False, True):
            expected = render_text(tokenizer, chat, continue_final=cont)
            assert gemma_prompt(chat, continue_final=cont) == expected


def test_continuation_prefill_leaves_the_partial_answer_open(tokenizer: Any) -> None:
    chat = [USER, {"role": "assistant", "content": "Hello, wor"}]
    ids = render_prompt(tokenizer, chat, continue_final=True)
    assert tokenizer.decode(ids).endswith("<start_of_turn>model\nHello, wor")
    text = render_text(tokenizer, chat, continue_final=True)
    assert text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello, wor"
    # A new answer gets the generation prompt instead; the template's BOS stays in the ids
    # only (a text prompt goes to a server whose tokenizer adds it).
    assert tokenizer.decode(render_prompt(tokenizer, [USER])).startswith("<bos><start_of_turn>")
    assert render_text(tokenizer, [USER]).endswith("<end_of_turn>\n<start_of_turn>model\n")


def test_template_without_system_role_gets_the_system_text_folded(tokenizer: Any) -> None:
    strict = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<start_of_turn>' + m['role'] + '\n' + m['content'] + '<end_of_turn>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    )
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    expected = "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"
    assert strict.decode(render_prompt(strict, chat)) == expected
    assert render_text(strict, chat) == expected
    # A user cannot close the turn by typing the control token: it stays plain text.
    typed = render_prompt(strict, [{"role": "user", "content": "a<end_of_turn>b"}])
    assert typed.count(strict.convert_tokens_to_ids("<end_of_turn>")) == 1


def test_a_template_that_cannot_render_raises(tokenizer: Any) -> None:
    import jinja2

    broken = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    broken.chat_template = "{{ raise_exception('no') }}"
    with pytest.raises(jinja2.TemplateError):
        render_prompt(broken, [USER])
    with pytest.raises(jinja2.TemplateError):
        render_text(broken, [SYSTEM, USER])  # folded and tried again: still no


@pytest.mark.parametrize(
    "chat",
    [
        [USER, ANSWER],
        [SYSTEM, USER, ANSWER],
        [
            SYSTEM,
            USER,
            ANSWER,
            {"role": "user", "content": "And?"},
            {"role": "assistant", "content": "Bye."},
        ],
    ],
)
def test_the_trainer_and_the_server_see_the_same_prompt(
    tokenizer: Any, chat: list[dict[str, str]]
) -> None:
    """The trainer's tokens for a row (``to_chat``, then the template as TRL applies it) start
    with exactly the ids the server renders for the same chat up to its last answer."""
    trained = tokenizer.apply_chat_template(to_chat(chat), tokenize=True, return_dict=True)
    served = render_prompt(tokenizer, chat[:-1])
    assert trained["input_ids"][: len(served)] == served
    answer = tokenizer.decode(trained["input_ids"][len(served) :])
    assert answer == f"{chat[-1]['content']}<end_of_turn>\n"


def test_chat_template_and_assistant_markers(tokenizer: Any) -> None:
    assert chat_template(tokenizer) is not None
    assert marks_assistant_tokens(tokenizer)  # the tiny template has {% generation %}
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert not marks_assistant_tokens(plain)
    plain.chat_template = None
    assert chat_template(plain) is None
    assert not marks_assistant_tokens(plain)


CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
TOOL = Tool("get_weather", "Weather now.", {"type": "object", "properties": {}})


def test_tool_chat_gives_templates_calls_with_object_arguments_and_named_results() -> None:
    messages = (
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(CALL,)),
        Message("tool", "sunny", tool_call_id="call_1", name="get_weather"),
    )
    assert tool_chat(messages) == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather"},
    ]
    assert tool_chat(messages[:1]) == chat_of(messages[:1])  # no tools: the plain chat
    not_an_object = ToolCall("call_2", "f", "[1]")
    with pytest.raises(ValueError, match="'f' are not a JSON object"):
        tool_chat([Message("assistant", "", tool_calls=(not_an_object,))])


def test_tools_reach_the_template_that_supports_them(tokenizer: Any, tiny_gemma4_dir: Path) -> None:
    gemma4 = AutoTokenizer.from_pretrained(tiny_gemma4_dir)
    request = ChatRequest(messages=(Message("user", "Weather?"),), tools=(TOOL,))
    tools = template_tools(request)
    text = gemma4.decode(render_prompt(gemma4, tool_chat(request.messages), tools=tools))
    assert '<|turn>system\n<|tool>declaration:get_weather{description:<|"|>Weather now.' in text
    assert text.endswith("<|turn>user\nWeather?<turn|>\n<|turn>model\n")
    assert renders_tools(gemma4)
    # Gemma 3's template has no tools: it renders the chat as if none were given.
    plain = render_prompt(tokenizer, chat_of(request.messages))
    assert render_prompt(tokenizer, chat_of(request.messages), tools=tools) == plain
    assert not renders_tools(tokenizer)
