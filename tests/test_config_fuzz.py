"""Config fuzzing: malformed YAML, wrong types and random mutations of config/standby.yaml make
``standby serve`` fail with exit code 2 and one ``standby: error: FILE: ...`` line, never a
traceback. (The cases of one named field are in test_config.py.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from standby.cli import main
from standby.config import load_settings
from standby.errors import ConfigError
from tests.test_config import serve_process

EXAMPLE = Path(__file__).parent.parent / "config" / "standby.yaml"
MUTANTS = 400
SEED = 20261128

# Each line nine aliases of the previous one: 9**9 values once expanded.
LAUGHS = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
).encode()

BROKEN: dict[str, bytes] = {
    "tab indentation": b"server:\n\thost: x\n",
    "unclosed flow": b"routes: {a: [gemini\n",
    "unclosed quote": b'server: {host: "x}\n',
    "bad indentation": b"server:\n  host: x\n port: 1\n",
    "duplicate anchor alias": b"a: *nope\n",
    "binary garbage": bytes(range(256)),
    "invalid UTF-8": b"server:\n  host: \xff\xfe\n",
    "NUL byte": b"server:\n  host: a\x00b\n",
    "only a comment": b"# nothing\n",
    "scalar document": b"42\n",
    "two documents": b"server: {}\n---\nserver: {}\n",
    "python tag": b"server: !!python/object/apply:os.system ['true']\n",
    "billion laughs": b'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + LAUGHS,
    "backends a list": b"backends: [gemini]\nroutes: {m: [gemini]}\n",
    "routes a string": b"backends: {g: {type: gemini, model: m}}\nroutes: gemini\n",
    "route list of numbers": b"backends: {g: {type: gemini, model: m}}\nroutes: {m: [1, 2]}\n",
    "port a string": b"server: {port: eighty}\nbackends: {g: {type: gemini, model: m}}\n"
    b"routes: {m: [g]}\n",
    "port too big": b"server: {port: 70000}\nbackends: {g: {type: gemini, model: m}}\n"
    b"routes: {m: [g]}\n",
    "timeout NaN": b"backends: {g: {type: gemini, model: m, timeouts: {connect_s: .nan}}}\n"
    b"routes: {m: [g]}\n",
    "timeout inf": b"backends: {g: {type: gemini, model: m, timeouts: {total_s: .inf}}}\n"
    b"routes: {m: [g]}\n",
    "negative concurrency": b"server: {max_concurrency: -1}\nbackends: {g: {type: gemini, "
    b"model: m}}\nroutes: {m: [g]}\n",
    "unknown backend type": b"backends: {g: {type: magic, model: m}}\nroutes: {m: [g]}\n",
    "backend type missing": b"backends: {g: {model: m}}\nroutes: {m: [g]}\n",
    "unknown top-level key": b"serverr: {}\nbackends: {g: {type: gemini, model: m}}\n"
    b"routes: {m: [g]}\n",
    "huge integer": b"server: {max_body_bytes: 1" + b"0" * 5000 + b"}\nbackends: {g: "
    b"{type: gemini, model: m}}\nroutes: {m: [g]}\n",
    "deep nesting": b"x: " + b"[" * 2000 + b"]" * 2000 + b"\n",
    "unset env var": b"backends: {g: {type: gemini, model: m, api_key: '${NO_SUCH_VAR_X}'}}\n"
    b"routes: {m: [g]}\n",
    "capture bus a number": b"backends: {g: {type: gemini, model: m}}\nroutes: {m: [g]}\n"
    b"capture: {bus: 5}\n",
    "bad redact regex": b"backends: {g: {type: gemini, model: m}}\nroutes: {m: [g]}\n"
    b"capture: {redact_patterns: ['(']}\n",
}


def assert_one_line(error: ConfigError, path: Path) -> None:
    text = str(error)
    assert "\n" not in text, text
    assert text.startswith(str(path)), text
    assert "Traceback" not in text and len(text) < 2000, text[:300]


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_file_is_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "standby.yaml"
    path.write_bytes(BROKEN[name])
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert_one_line(caught.value, path)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"standby: error: {path}"), err


def mutate(text: str, rng: random.Random) -> str:
    """One random edit of the kind a hand-edited YAML file gets."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    kind = rng.randrange(7)
    if kind == 0:  # delete a character
        j = rng.randrange(max(1, len(text)))
        return text[:j] + text[j + 1 :]
    if kind == 1:  # insert YAML punctuation
        j = rng.randrange(max(1, len(text)))
        return text[:j] + rng.choice(":-[]{}#&*!|>'\"%@`,?\t\n ") + text[j:]
    if kind == 2:  # re-indent a line
        lines[i] = " " * rng.randrange(0, 7) + lines[i].lstrip()
    elif kind == 3:  # drop a line
        del lines[i]
    elif kind == 4:  # duplicate a line
        lines.insert(i, lines[i])
    elif kind == 5:  # swap two lines
        k = rng.randrange(len(lines))
        lines[i], lines[k] = lines[k], lines[i]
    else:  # replace a value with one of another type
        key, sep, _ = lines[i].partition(":")
        if sep:
            value = rng.choice(
                [
                    "-1",
                    "0",
                    "1e309",
                    ".nan",
                    "[]",
                    "{}",
                    "null",
                    "true",
                    "'x'",
                    "[1, [2]]",
                    "~",
                    "0x10",
                    "2026-11-28",
                    "'${UNSET_X}'",
                ]
            )
            lines[i] = f"{key}: {value}"
    return "\n".join(lines) + "\n"


def test_random_mutations_of_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hundreds of mutants of config/standby.yaml (fixed seed): each either loads or fails with
    one ConfigError line; the ones that fail also fail ``standby serve`` with one line."""
    monkeypatch.setenv("STANDBY_API_KEY", "gw-key")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    monkeypatch.delenv("UNSET_X", raising=False)
    rng = random.Random(SEED)
    original = EXAMPLE.read_text()
    failed = 0
    for n in range(MUTANTS):
        text = original
        for _ in range(rng.randrange(1, 4)):
            text = mutate(text, rng)
        path = tmp_path / f"mutant-{n}.yaml"
        path.write_text(text)
        try:
            load_settings(path)
        except ConfigError as e:
            assert_one_line(e, path)
            failed += 1
            if failed % 20 == 0:  # the CLI path too (in-process: no server starts)
                assert main(["serve", "--config", str(path)]) == 2
                err = capsys.readouterr().err.strip().splitlines()
                assert len(err) == 1 and err[0].startswith("standby: error:"), err
    assert failed > MUTANTS // 3  # the mutations do break most files


def test_serve_subprocess_prints_no_traceback(tmp_path: Path) -> None:
    """The real console entry point, on a file that is not YAML at all."""
    path = tmp_path / "standby.yaml"
    path.write_bytes(BROKEN["binary garbage"])
    run = serve_process(path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
