"""The settings of every tool: defaults, then the --from-config file, then flags; booleans that a
flag can turn off again; one-line errors naming the flag or the file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, SecretStr

from standby.errors import ConfigError
from standby.toolconfig import OneLineParser, ToolConfig, add_config_flags, resolve_config


class Demo(ToolConfig):
    ft_model_id: str = Field(description="adapter to load")
    inference_bs: int = Field(default=4, ge=1, description="rows per batch")
    temperature: float = 0.0
    lm_response_append: bool = True
    mode: Literal["one-stage", "two-stage"] = "one-stage"
    stop: list[str] = Field(default_factory=list)
    gen_config: dict[str, float] = Field(default_factory=dict)
    revision: str | None = None


def resolve(argv: list[str]) -> Demo:
    parser = OneLineParser(prog="demo")
    add_config_flags(parser, Demo)
    return resolve_config(Demo, parser.parse_args(argv))


def test_flags_win_over_the_file_and_the_file_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(
        "ft_model_id: from-file\ninference_bs: 8\nlm_response_append: true\nstop: ['<eot>']\n"
    )
    got = resolve(["--from-config", str(cfg), "--inference-bs", "16", "--no-lm-response-append"])
    assert got.ft_model_id == "from-file"
    assert got.inference_bs == 16
    assert got.lm_response_append is False
    assert got.stop == ["<eot>"]
    assert got.temperature == 0.0 and got.revision is None


def test_every_kind_of_flag() -> None:
    got = resolve(
        [
            "--ft-model-id",
            "m",
            "--mode",
            "two-stage",
            "--stop",
            "a",
            "b",
            "--gen-config",
            '{"top_p": 0.9}',
            "--revision",
            "abc",
        ]
    )
    assert (got.mode, got.stop, got.gen_config, got.revision) == (
        "two-stage",
        ["a", "b"],
        {"top_p": 0.9},
        "abc",
    )


def test_environment_variables_in_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("ft_model_id: ${DEMO_MODEL}\nrevision: ${DEMO_REV:-main}\n")
    monkeypatch.setenv("DEMO_MODEL", "org/model")
    got = resolve(["--from-config", str(cfg)])
    assert (got.ft_model_id, got.revision) == ("org/model", "main")


@pytest.mark.parametrize(
    ("text", "argv", "message"),
    [
        (None, [], r"^--ft-model-id is required \(give --ft-model-id or ft_model_id in a "),
        ("ft_model_id: m\ninference_bs: 0\n", [], r"demo\.yaml: inference_bs: Input should be"),
        ("ft_model_id: m\n", ["--inference-bs", "0"], r"^--inference-bs: Input should be"),
        ("ft_model_id: m\nbatch: 3\n", [], r"demo\.yaml: batch: unknown setting"),
        ("- a\n- b\n", [], r"demo\.yaml: expected a mapping"),
        ("ft_model_id: [\n", [], r"demo\.yaml: invalid YAML \(line 2"),
        ("ft_model_id: ${DEMO_UNSET_VAR}\n", [], r"environment variable DEMO_UNSET_VAR is not"),
    ],
)
def test_one_line_errors(tmp_path: Path, text: str | None, argv: list[str], message: str) -> None:
    args = list(argv)
    if text is not None:
        (tmp_path / "demo.yaml").write_text(text)
        args = ["--from-config", str(tmp_path / "demo.yaml"), *args]
    with pytest.raises(ConfigError, match=message) as err:
        resolve(args)
    assert "\n" not in str(err.value)


def test_a_bad_flag_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        resolve(["--ft-model-id", "m", "--inference-bs", "many"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--inference-bs: invalid int value: 'many'" in err


class WithSecret(ToolConfig):
    api_key: SecretStr | None = Field(default=None, description="the service's key")
    dataset: str = Field(description="where the rows are")


def test_help_says_required_and_shows_a_secret_flag_as_text() -> None:
    parser = OneLineParser(prog="demo")
    add_config_flags(parser, WithSecret)
    text = parser.format_help()
    assert "PydanticUndefined" not in text
    assert "where the rows are (required)" in " ".join(text.split())
    assert "--api-key SECRET" in text
    got = resolve_config(WithSecret, parser.parse_args(["--dataset", "d", "--api-key", "k-1"]))
    assert got.api_key is not None and got.api_key.get_secret_value() == "k-1"


def test_no_command_help_shows_an_undefined_default() -> None:
    from standby.cli import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = []
    for name, command in sub.choices.items():
        text = command.format_help()
        shown.append(name)
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for group in nested:
            text += "".join(c.format_help() for c in group.choices.values())
        assert "PydanticUndefined" not in text, name
        assert "api-key JSON" not in text, name
    assert {"batch-infer", "data", "train"} <= set(shown)
