"""``standby train`` as a user runs it: settings from a YAML file and flags, a pair-store
snapshot as the data, and every problem a user can fix as one line on stderr with exit 2."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import yaml

from standby.cli import main
from standby.config import DataConfig
from standby.data.pairs import PairStore
from tests.data import candidate
from tests.fixtures.hub_stub import running_hub_stub
from tests.trainer.conftest import flags, tiny_settings, write_jsonl


@pytest.fixture
def settings(tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path) -> dict[str, Any]:
    """Two quick steps of the tiny Gemma on the chat dataset, into ``tmp_path / "out"``."""
    return tiny_settings(tiny_model_dir, chat_dataset, tmp_path / "out", max_steps=2)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "warning", "train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def fill_store(path: Path, count: int) -> PairStore:
    store = PairStore(path, config=DataConfig(test_fraction=0.25))
    store.write(
        candidate(
            i,
            prompt=f"What comes after {i}?",
            response=f"After {i} comes {i + 1}.",
            system=("Answer in one sentence.",) if i % 4 == 0 else (),
            route="gemini-2.5-flash",
        )
        for i in range(count)
    )
    return store


def test_from_config_with_flags_on_a_pair_store_snapshot(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = fill_store(tmp_path / "pairs.db", 40)
    snapshot = store.snapshot()
    store.close()
    settings = tiny_settings(
        tiny_model_dir, tmp_path / "unused", tmp_path / "adapter", max_steps=50
    )
    settings["train_ds_id"] = f"sqlite:///{tmp_path / 'pairs.db'}"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(settings))
    code, out, err = run(capsys, "--from-config", str(config), "--max-steps", "3", "--json")
    assert code == 0, err
    card = json.loads(out)
    assert card["training"]["global_step"] == 3  # the flag won over the file's 50
    assert card["dataset"]["snapshot_id"] == snapshot.id
    assert card["dataset"]["content_hash"] != snapshot.content_hash  # one split, not the store
    assert card["dataset"]["rows"] + card["eval_dataset"]["rows"] == 40
    assert card["eval_dataset"]["snapshot_id"] == snapshot.id
    assert json.loads((tmp_path / "adapter" / "standby-model.json").read_text()) == card
    readme = (tmp_path / "adapter" / "README.md").read_text()  # peft's template, replaced
    assert "More Information Needed" not in readme and f"# {card['version']}" in readme

    # Run again into the same folder: refused, then replaced with --overwrite.
    code, _, err = run(capsys, "--from-config", str(config), "--max-steps", "3")
    assert code == 2
    assert (
        err == f"standby: error: {tmp_path / 'adapter'} already holds a trained adapter"
        " (--overwrite replaces it)\n"
    )
    code, out, err = run(capsys, "--from-config", str(config), "--max-steps", "2", "--overwrite")
    assert code == 0, err
    assert out.startswith("adapter ") and "train loss" in out and "eval loss" in out


def no_template_model(tiny_model_dir: Path, where: Path, template: str | None) -> Path:
    """A copy of the tiny model whose tokenizer has ``template`` as its chat template."""
    shutil.copytree(tiny_model_dir, where)
    (where / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((where / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    (where / "tokenizer_config.json").write_text(json.dumps(config))
    return where


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-messages", r"\[train_sft\]: missing column messages \(has: prompt, answer\)"),
        ("empty-store", r"pairs\.db \[train_sft\]: the split has no rows"),
        ("empty-eval", r"\[test_sft\]: the split has no rows \(eval split; --eval-ds-split ''"),
        ("no-template", r"its tokenizer has no chat template"),
        ("missing-dir", r"base model '.*nowhere': no such directory"),
        (
            "offline",
            r"cannot load base model 'google/gemma-nothing': not a local folder and not"
            r" in the Hub cache \(offline\)",
        ),
        ("lora-r", r"--lora-r: Input should be greater than or equal to 1"),
        ("warmup", r"--warmup-ratio: Input should be less than 1"),
        ("resume-overwrite", r"settings: resume and overwrite exclude each other"),
        ("qlora-cpu", r"--load-in-4bit \(QLoRA\) needs a CUDA GPU; this run is on cpu"),
        ("unknown-key", r"train\.yaml: lora_rank: unknown setting"),
        ("interrupted", r"holds an interrupted run \(checkpoint-3\): --resume continues it"),
        ("resume-finished", r"holds a finished adapter and no checkpoint to resume from"),
        (
            "modules",
            r"cannot set up training: Target modules \{'nope_proj'\} not found in the base",
        ),
        ("bus-url", r"event bus URL 'nats://127\.0\.0\.1:4222': unsupported scheme"),
    ],
)
def test_problems_are_one_line_errors(
    case: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, Any],
    tiny_model_dir: Path,
    chat_dataset: Path,
    tmp_path: Path,
) -> None:
    extra: list[str] = []
    if case == "no-messages":
        write_jsonl(tmp_path / "d" / "train_sft.jsonl", [{"prompt": "p", "answer": "a"}])
        settings["train_ds_id"] = str(tmp_path / "d")
    elif case == "empty-store":
        PairStore(tmp_path / "pairs.db").close()
        settings["train_ds_id"] = f"sqlite:///{tmp_path / 'pairs.db'}"
    elif case == "empty-eval":
        (tmp_path / "d").mkdir()
        shutil.copy(chat_dataset / "train_sft.jsonl", tmp_path / "d")
        (tmp_path / "d" / "test_sft.jsonl").write_text("")
        settings["train_ds_id"] = str(tmp_path / "d")
    elif case == "no-template":
        settings["base_model_id"] = str(no_template_model(tiny_model_dir, tmp_path / "m", None))
    elif case == "missing-dir":
        settings["base_model_id"] = str(tmp_path / "nowhere")
    elif case == "offline":
        settings["base_model_id"] = "google/gemma-nothing"
    elif case == "lora-r":
        extra = ["--lora-r", "0"]
    elif case == "warmup":
        extra = ["--warmup-ratio", "1.5"]
    elif case == "resume-overwrite":
        extra = ["--resume", "--overwrite"]
    elif case == "qlora-cpu":
        extra = ["--load-in-4bit"]
    elif case == "unknown-key":
        (tmp_path / "train.yaml").write_text("lora_rank: 8\n")
        extra = ["--from-config", str(tmp_path / "train.yaml")]
    elif case == "interrupted":
        checkpoint = tmp_path / "out" / "checkpoints" / "checkpoint-3"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text("{}")
    elif case == "modules":
        extra = ["--lora-target-modules", "nope_proj"]
    elif case == "bus-url":
        extra = ["--publish-event", "--bus", "nats://127.0.0.1:4222"]
    elif case == "resume-finished":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "standby-model.json").write_text("{}")
        extra = ["--resume"]
    code, out, err = run(capsys, *flags(settings), *extra)
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("standby:")]
    assert err.endswith(line + "\n") and line.startswith("standby: error: ")
    assert re.search(expected, line), err
    if case != "resume-finished":
        assert not (tmp_path / "out" / "standby-model.json").exists()


def test_a_gated_base_model_without_a_token_says_so(
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_hub_stub() as hub:
        hub.gated.add("google/gemma-3-1b-it")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            huggingface_hub.constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        settings["base_model_id"] = "google/gemma-3-1b-it"
        code, _, err = run(capsys, *flags(settings))
        assert any("/google/gemma-3-1b-it/resolve/main/" in p for p in hub.paths())
    assert code == 2
    assert err == (
        "standby: error: cannot load base model 'google/gemma-3-1b-it': the repository is"
        " gated: accept its licence on the Hub and set HF_TOKEN\n"
    )


# Offline, peft cannot ask the Hub whether the base's vocabulary changed when it saves (it did not).
@pytest.mark.filterwarnings("ignore:Could not find a config file in team/tiny-gemma:UserWarning")
def test_a_hub_id_from_the_cache_offline_is_pinned_to_its_commit(
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, Any],
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Hub model downloaded earlier trains offline; the card names the commit it was at."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--team--tiny-gemma"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    settings |= {"base_model_id": "team/tiny-gemma", "eval_ds_split": "", "merge": True}
    code, out, err = run(capsys, *flags(settings), "--json")
    assert code == 0, err
    card = json.loads(out)
    assert card["base_model"] == {"id": "team/tiny-gemma", "revision": None, "sha": sha}
    assert card["eval_dataset"] is None and card["metrics"]["eval_loss"] is None
    assert (tmp_path / "out" / "merged" / "model.safetensors").is_file()


def test_a_failure_after_training_says_the_adapter_is_saved(
    capsys: pytest.CaptureFixture[str], settings: dict[str, Any], tmp_path: Path
) -> None:
    code, _, err = run(capsys, *flags(settings), "--push-to-hub", "team/m", "--version", "v7")
    assert code == 2
    assert err.splitlines()[-1] == (
        f"standby: error: adapter v7 is saved in {tmp_path / 'out'}, but cannot push to the Hub:"
        " offline mode is on (HF_HUB_OFFLINE)"
    )
    card = json.loads((tmp_path / "out" / "standby-model.json").read_text())
    assert (card["version"], card["hub"]) == ("v7", None)


def test_one_folder_per_version(
    capsys: pytest.CaptureFixture[str],
    tiny_model_dir: Path,
    chat_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = tmp_path / "adapters" / "{version}"
    settings = tiny_settings(tiny_model_dir, chat_dataset, template, max_steps=1)
    code, out, err = run(capsys, *flags(settings), "--json")
    assert code == 0, err
    version = json.loads(out)["version"]
    code, out, err = run(capsys, *flags(settings), "--version", "v3", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == "v3"
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == sorted([version, "v3"])
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun / accelerate launch set it
    code, _, err = run(capsys, *flags(settings))
    assert code == 2
    assert err.endswith("contains {version}: give --version when several processes train\n")
