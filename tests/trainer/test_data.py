"""Rows become chats formatted exactly as the gateway's local backend formats a request, and the
loss is computed on the assistant's tokens and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from standby.chat_format import as_served, fold_system_messages, render_prompt
from standby.data.pairs import DataError
from standby.trainer.config import TrainConfig
from standby.trainer.data import prepare_split, to_chat
from standby.trainer.model import load_base, place
from standby.trainer.train import build_trainer
from tests.trainer.conftest import chat_rows, tiny_settings, write_jsonl

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hi?"}
ANSWER = {"role": "assistant", "content": "Hello."}


def test_to_chat_keeps_the_system_turn_for_the_template_to_place() -> None:
    assert to_chat([SYSTEM, USER, ANSWER]) == [SYSTEM, USER, ANSWER]
    assert to_chat([USER, ANSWER, USER]) == [USER, ANSWER]  # an unanswered last turn is dropped
    assert to_chat([USER, ANSWER, USER, ANSWER]) == [USER, ANSWER, USER, ANSWER]
    assert to_chat([SYSTEM, USER, ANSWER, SYSTEM, USER]) == [SYSTEM, USER, ANSWER]


def test_system_turns_are_trained_as_they_are_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A template that takes a system turn keeps it (Gemma 4 has a system role; Gemma 3's
    # template folds it itself); one that rejects it gets it folded, as a server does.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert as_served(tokenizer, [SYSTEM, USER, ANSWER]) == [SYSTEM, USER, ANSWER]
    strict = tmp_path / "strict"
    shutil.copytree(tiny_model_dir, strict)
    refuse = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
    template = (strict / "chat_template.jinja").read_text()
    (strict / "chat_template.jinja").write_text(refuse + template)
    folded = as_served(AutoTokenizer.from_pretrained(strict), [SYSTEM, USER, ANSWER])
    assert folded == fold_system_messages([SYSTEM, USER, ANSWER])
    assert folded[0] == {"role": "user", "content": "Be brief.\n\nHi?"}


@pytest.mark.parametrize(
    "messages",
    [
        [USER],
        [ANSWER],
        [],
        "Hi?",
        None,
        [USER, USER, ANSWER],
        [{"role": "tool", "content": "x"}, USER, ANSWER],
        [{"role": "user"}, ANSWER],
        [{"role": "user", "content": 3}, ANSWER],
    ],
)
def test_rows_without_an_answered_user_turn_are_not_chats(messages: Any) -> None:
    assert to_chat(messages) is None


def test_unusable_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    unanswered = {"prompt": "x", "prompt_id": "x", "messages": [USER], "category": "c"}
    rows = [*chat_rows(0, 3), unanswered]
    write_jsonl(tmp_path / "train_sft.jsonl", rows)
    prepared = prepare_split(str(tmp_path), "train_sft")
    assert (prepared.rows, prepared.skipped, prepared.dataset.column_names) == (3, 1, ["messages"])


def test_data_errors_are_one_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "cols" / "train_sft.jsonl", [{"prompt": "p", "answer": "a"}])
    with pytest.raises(DataError, match=r"cols \[train_sft\]: missing column messages \(has: "):
        prepare_split(str(tmp_path / "cols"), "train_sft")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train_sft.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty \[train_sft\]: the split has no rows"):
        prepare_split(str(tmp_path / "empty"), "train_sft")
    write_jsonl(tmp_path / "bad" / "train_sft.jsonl", [{"messages": [USER]}] * 2)
    with pytest.raises(DataError, match="none of its 2 rows has a user message answered"):
        prepare_split(str(tmp_path / "bad"), "train_sft")
    with pytest.raises(DataError, match="no such file or folder"):
        prepare_split(str(tmp_path / "nowhere"), "train_sft")


def test_the_loss_mask_is_exactly_the_assistant_tokens(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    cfg = TrainConfig.model_validate(tiny_settings(tiny_model_dir, chat_dataset, tmp_path))
    placement = place(cfg)
    base = load_base(cfg, placement)
    prepared = prepare_split(str(chat_dataset), "train_sft")
    trainer = build_trainer(cfg, placement, base.model, base.tokenizer, prepared.dataset, None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = chat_rows(0, 48)
    checked = {"system": 0, "two exchanges": 0}
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        ids, labels = example["input_ids"], example["labels"]
        # Trained tokens: each answer and its end-of-turn, in order, and nothing else.
        trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        expected = [
            t
            for a in answers
            for t in tokenizer.encode(f"{a}<end_of_turn>\n", add_special_tokens=False)
        ]
        assert trained == expected
        assert all(label in (-100, i) for i, label in zip(ids, labels, strict=True))
        # The context before the first answer is what the gateway sends the model at inference
        # (system message included, as a client would send it).
        first_answer = row["messages"].index(
            next(m for m in row["messages"] if m["role"] == "assistant")
        )
        prompt = render_prompt(tokenizer, row["messages"][:first_answer])
        assert ids[: len(prompt)] == prompt
        assert labels[: len(prompt)] == [-100] * len(prompt)
        checked["system"] += row["messages"][0]["role"] == "system"
        checked["two exchanges"] += len(answers) == 2
    assert checked == {"system": 10, "two exchanges": 7}


def test_packing_keeps_the_same_trained_tokens_in_fewer_sequences(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    prepared = prepare_split(str(chat_dataset), "train_sft")

    def sequences(packing: bool) -> list[dict[str, Any]]:
        settings = tiny_settings(tiny_model_dir, chat_dataset, tmp_path, packing=packing)
        cfg = TrainConfig.model_validate(settings | {"max_length": 128})
        placement = place(cfg)
        base = load_base(cfg, placement)
        trainer = build_trainer(cfg, placement, base.model, base.tokenizer, prepared.dataset, None)
        return list(trainer.train_dataset)

    def trained(rows: list[dict[str, Any]]) -> list[int]:
        pairs = (zip(r["input_ids"], r["labels"], strict=True) for r in rows)
        return sorted(token for row in pairs for token, label in row if label != -100)

    plain, packed = sequences(False), sequences(True)
    assert len(packed) < len(plain) // 2
    assert all(len(r["input_ids"]) <= 128 for r in packed)
    assert trained(packed) == trained(plain)


def test_a_template_without_assistant_markers_trains_on_each_last_answer(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    # Templates as published (Gemma 4's among them) mark no assistant tokens: each
    # conversation's last answer is the completion, everything before it the prompt.
    model = tmp_path / "unmarked"
    shutil.copytree(tiny_model_dir, model)
    template = (model / "chat_template.jinja").read_text()
    unmarked = template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert unmarked != template
    (model / "chat_template.jinja").write_text(unmarked)
    cfg = TrainConfig.model_validate(tiny_settings(model, chat_dataset, tmp_path / "out"))
    placement = place(cfg)
    base = load_base(cfg, placement)
    prepared = prepare_split(str(chat_dataset), "train_sft")
    trainer = build_trainer(cfg, placement, base.model, base.tokenizer, prepared.dataset, None)
    tokenizer = AutoTokenizer.from_pretrained(model)
    for row, example in zip(chat_rows(0, 48), trainer.train_dataset, strict=True):
        ids, labels = example["input_ids"], example["labels"]
        trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        last = next(m for m in reversed(row["messages"]) if m["role"] == "assistant")
        assert trained == tokenizer.encode(
            f"{last['content']}<end_of_turn>\n", add_special_tokens=False
        )
