"""A tiny random-weight Gemma, built in seconds: a SIMULATION AID for tests, the demo and
failover drills.

The weights are random, so the model's output is gibberish by design. What is real is
everything around the weights: a byte-level BPE tokenizer with Gemma's special tokens and turn
format, a Gemma-architecture config, a generation config that stops at the end of a turn, all
saved in the standard Hugging Face layout, so ``AutoTokenizer`` / ``AutoModelForCausalLM`` /
``PeftModel`` load it exactly as they load the real checkpoints. Two generations:

- ``gemma3_text`` (default; also ``gemma``, ``gemma2``): like ``google/gemma-3-1b-it``,
  ``<start_of_turn>user ... <end_of_turn>``, no system role, no tools in the template;
- ``gemma4``: like ``google/gemma-4-E2B-it`` (a ``gemma4`` config around a ``gemma4_text`` one,
  no vision or audio tower), ``<|turn>`` turns, a system role and tool calling in the chat
  template (``tiny_gemma4``).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

from standby.sim import tiny_gemma4

ARCHS = ("gemma", "gemma2", "gemma3_text", "gemma4")
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
VOCAB_SIZE = 1000

# Gemma's turn format. A system message is folded into the first user turn (Gemma has no system
# role); assistant turns are role `model` and sit inside {% generation %} so that TRL's
# assistant_only_loss can find them.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ raise_exception('A system message is only allowed first.') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{% generation %}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endgeneration %}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + message['role'] + '\n' }}"
    "{{ (first_user_prefix if loop.first else '') + (message['content'] | trim) }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_NOUNS = _words(
    """
gateway model service team operator client router breaker engineer trainer judge request answer
question token story weather report error message room news plan chapter apple door recipe metric
queue letter mountain path stream text river city library garden window kitchen table chair book
paper pencil teacher student doctor farmer market bridge island forest ocean valley desert winter
summer spring autumn morning evening night hour minute second week month year country village
street house school office server cluster network cable signal memory disk file folder record
dataset prompt reply summary draft version release feature bug test alert dashboard graph chart
number price budget invoice order customer product company meeting schedule holiday journey train
station airport ticket passport camera picture music song guitar piano dinner breakfast lunch
coffee bread butter cheese soup salad orange banana lemon sugar salt pepper water fire stone
"""
)
_VERBS = _words(
    """
answers reads writes sends checks learns builds measures returns keeps finds opens closes follows
explains repeats moves carries shares prints counts sorts cleans paints watches hears tells asks
helps starts stops waits plays sings cooks bakes drives walks climbs crosses fixes breaks tests
trains judges routes retries streams captures stores loads saves ships deploys watches reviews
"""
)
_ADJECTIVES = _words(
    """
small large quiet loud quick slow bright dark warm cold green blue red yellow simple careful
friendly early late modern ancient empty full heavy light short long happy tired busy calm
strange useful private public local remote broken healthy silent patient clever gentle
"""
)
_ADVERBS = _words(
    """
quickly slowly carefully gently quietly loudly again often rarely always never today tomorrow
yesterday together alone outside inside nearby everywhere
"""
)
_QUESTIONS = (
    "What is the capital of France?",
    "How do I bake bread?",
    "Why is the sky blue?",
    "Can you write a poem about rain?",
    "What time is it in Tokyo?",
    "Explain gravity simply.",
    "Summarize this article, please.",
    "How many legs does a spider have?",
)
_EXTRA = "café naïve über — “quoted” 42 3.14 1,000 (yes) [no] {maybe}: a-b_c / d? e! f; 'g'"


def tiny_corpus(size: int = 20_000) -> str:
    """About ``size`` characters of deterministic, English-looking text (same every call)."""
    rng = random.Random(20240611)
    lines = [_EXTRA]
    total = len(_EXTRA)
    while total < size:
        if rng.random() < 0.1:
            line = rng.choice(_QUESTIONS)
        else:
            words = [
                rng.choice(("The", "A", "My", "Our", "This", "Every")),
                rng.choice(_ADJECTIVES),
            ]
            words += [rng.choice(_NOUNS), rng.choice(_VERBS), "the", rng.choice(_NOUNS)]
            if rng.random() < 0.5:
                words.append(rng.choice(_ADVERBS))
            if rng.random() < 0.3:
                words += ["in", str(rng.randint(2, 2025))]
            line = " ".join(words) + rng.choice((".", ".", "!", "?"))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def _complete(path: Path) -> bool:
    names = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}
    if not all((path / n).is_file() for n in names):
        return False
    return any(path.glob("*.safetensors"))


def _build_tokenizer(arch: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    gemma4 = arch == "gemma4"
    specials = tiny_gemma4.SPECIAL_TOKENS if gemma4 else SPECIAL_TOKENS
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(tiny_corpus().splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=list(specials[4:]),
        model_input_names=["input_ids", "attention_mask"],
        chat_template=tiny_gemma4.CHAT_TEMPLATE if gemma4 else CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _build_config(arch: str, tokenizer: Any) -> Any:
    from transformers import CONFIG_MAPPING

    if arch == "gemma4":  # the real checkpoints' layout: text config inside, no other towers
        gemma4: Any = CONFIG_MAPPING[arch]
        return gemma4(text_config=tiny_gemma4.text_config(tokenizer))
    ids = tokenizer.convert_tokens_to_ids
    kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 2048,
        "pad_token_id": ids("<pad>"),
        "bos_token_id": ids("<bos>"),
        "eos_token_id": [ids("<eos>"), ids("<end_of_turn>")],
        "tie_word_embeddings": True,
    }
    if arch != "gemma":
        kwargs |= {"query_pre_attn_scalar": 16, "sliding_window": 512}
    return CONFIG_MAPPING[arch](**kwargs)


def build_tiny_gemma(path: str | Path, *, seed: int = 0, arch: str = "gemma3_text") -> Path:
    """Build (or reuse) a tiny random-weight Gemma + tokenizer at ``path``; returns the path.

    Idempotent: a complete model already at ``path`` is returned as is. Same ``seed`` and
    library versions give the same weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")
    out = Path(path)
    if _complete(out):
        return out
    tokenizer = _build_tokenizer(arch)
    config = _build_config(arch, tokenizer)
    text = config.get_text_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    # Weights last: their presence marks the directory complete.
    model.save_pretrained(str(out))
    return out


def build_tiny_lora_adapter(base_path: str | Path, out_path: str | Path, *, seed: int = 1) -> Path:
    """Save a LoRA adapter (r 8, all linear layers) for the tiny model at ``base_path``.

    LoRA's B matrices start at zero, which would leave outputs unchanged; here they are random,
    so loading the adapter visibly changes generation (what adapter-loading tests need).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(out_path)
    if (out / "adapter_config.json").is_file() and any(out.glob("adapter_model.*")):
        return out
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 calls a transformers 5 property that is deprecated (harmless).
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return out
