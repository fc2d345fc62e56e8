"""The tiny Gemma 4: its special tokens, chat template and config (``tiny_model`` builds it).

The turn and tool format follows Google's "Gemma 4 Prompt Formatting" page
(ai.google.dev/gemma/docs/core/prompt-formatting-gemma4) and the structure of the chat template
shipped with ``google/gemma-4-E2B-it``:

- turns are ``<|turn>ROLE\\n ... <turn|>\\n``; roles ``system``, ``user``, ``model``;
- tools are declared in the system turn, one ``<|tool>declaration:NAME{description:...,
  parameters:{...}}<tool|>`` each (schema keys sorted, types upper-cased);
- the model calls with ``<|tool_call>call:NAME{key:value,...}<tool_call|>``; every string value
  is delimited by the single token ``<|"|>``; keys are bare, numbers and booleans bare;
- a result comes back inside the same model turn as
  ``<|tool_response>response:NAME{value:<|"|>...<|"|>}<tool_response|>``, after which the model
  goes on in that turn (no new generation prompt); ``<|tool_response>`` is where the model stops
  to wait for a result (and what a call with no result yet is followed by).

For text and tool chats it renders exactly what the template ``google/gemma-4-E2B-it`` ships
(its current revision; TRL keeps a copy as ``trl/chat_templates/gemma4_v5.jinja``) renders:
``tests/sim/test_tiny_model.py`` checks it.

Left out on purpose (a test model needs none of them): images, audio, video, thinking mode
(``<|think|>``, ``<|channel>``). The model's own output sits inside ``{% generation %}`` markers
so that TRL's assistant-only loss can find it (tool calls included, tool results not).
"""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<|turn>",
    "<turn|>",
    "<|tool>",
    "<tool|>",
    "<|tool_call>",
    "<tool_call|>",
    "<|tool_response>",
    "<tool_response|>",
    '<|"|>',
)
STOP_TOKENS = ("<eos>", "<turn|>", "<|tool_response>")

CHAT_TEMPLATE = """
{%- macro format_argument(argument, escape_keys=True, upper_types=False) -%}
{%- if argument is string -%}{{- '<|"|>' + argument + '<|"|>' -}}
{%- elif argument is boolean -%}{{- 'true' if argument else 'false' -}}
{%- elif argument is none -%}{{- 'null' -}}
{%- elif argument is mapping -%}{{- '{' -}}
{%- for key, value in argument | dictsort -%}
{%- if not loop.first %},{% endif -%}
{%- if escape_keys -%}{{- '<|"|>' + key + '<|"|>' -}}{%- else -%}{{- key -}}{%- endif -%}:
{%- if upper_types and key == 'type' and value is string -%}
{{- '<|"|>' + value | upper + '<|"|>' -}}
{%- else -%}{{- format_argument(value, escape_keys, upper_types) -}}{%- endif -%}
{%- endfor -%}{{- '}' -}}
{%- elif argument is sequence -%}{{- '[' -}}
{%- for item in argument -%}{%- if not loop.first %},{% endif -%}
{{- format_argument(item, escape_keys, upper_types) -}}{%- endfor -%}{{- ']' -}}
{%- else -%}{{- argument -}}
{%- endif -%}
{%- endmacro -%}
{%- macro format_declaration(function) -%}
declaration:{{- function['name'] -}}{description:<|"|>{{- function['description'] or '' -}}<|"|>
{%- if function['parameters'] -%}
,parameters:{{- format_argument(function['parameters'], False, True) -}}
{%- endif -%}}
{%- endmacro -%}
{%- macro format_tool_response(name, response) -%}
<|tool_response>response:{{- name -}}{
{%- if response is mapping -%}
{%- for key, value in response | dictsort -%}
{%- if not loop.first %},{% endif -%}{{- key -}}:{{- format_argument(value, False) -}}
{%- endfor -%}
{%- else -%}value:{{- format_argument(response, False) -}}
{%- endif -%}}<tool_response|>
{%- endmacro -%}
{{- bos_token -}}
{%- set loop_messages = messages -%}
{%- if tools or (messages and messages[0]['role'] in ['system', 'developer']) -%}
{{- '<|turn>system\\n' -}}
{%- if messages and messages[0]['role'] in ['system', 'developer'] -%}
{{- messages[0]['content'] | trim -}}
{%- set loop_messages = messages[1:] -%}
{%- endif -%}
{%- for tool in tools or [] -%}
{{- '<|tool>' + format_declaration(tool['function']) + '<tool|>' -}}
{%- endfor -%}
{{- '<turn|>\\n' -}}
{%- endif -%}
{%- set ns = namespace(open=false) -%}
{%- for message in loop_messages -%}
{%- if message['role'] == 'tool' -%}
{{- format_tool_response(message['name'], message['content']) -}}
{%- elif message['role'] == 'assistant' -%}
{%- if not ns.open -%}{{- '<|turn>model\\n' -}}{%- endif -%}
{%- set calls = message['tool_calls'] or [] -%}
{%- set ns.open = calls and not message['content'] -%}
{% generation %}
{%- for call in calls -%}
{{- '<|tool_call>call:' + call['function']['name'] + '{' -}}
{%- set arguments = call['function']['arguments'] -%}
{%- if arguments is mapping -%}
{%- for key, value in arguments | dictsort -%}
{%- if not loop.first %},{% endif -%}{{- key -}}:{{- format_argument(value, False) -}}
{%- endfor -%}
{%- else -%}{{- arguments -}}
{%- endif -%}
{{- '}<tool_call|>' -}}
{%- endfor -%}
{%- if not ns.open -%}{{- (message['content'] or '') | trim + '<turn|>\\n' -}}{%- endif -%}
{% endgeneration %}
{%- if ns.open and (loop.last or loop.nextitem['role'] != 'tool') -%}
{{- '<|tool_response>' -}}
{%- endif -%}
{%- else -%}
{%- if ns.open -%}{{- '<turn|>\\n' -}}{%- set ns.open = false -%}{%- endif -%}
{{- '<|turn>' + message['role'] + '\\n' + message['content'] | trim + '<turn|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not ns.open -%}{{- '<|turn>model\\n' -}}{%- endif -%}
""".strip()


def text_config(tokenizer: Any) -> dict[str, Any]:
    """A hidden-64, two-layer ``gemma4_text`` config: one sliding and one full attention layer
    (Gemma 4 ends on a full one), per-layer input embeddings kept (E2B has them) but small."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer),
        "vocab_size_per_layer_input": len(tokenizer),
        "hidden_size": 64,
        "hidden_size_per_layer_input": 8,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "global_head_dim": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "sliding_window": 512,
        "max_position_embeddings": 2048,
        "pad_token_id": ids("<pad>"),
        "bos_token_id": ids("<bos>"),
        "eos_token_id": [ids(t) for t in STOP_TOKENS],
        "tie_word_embeddings": True,
    }
