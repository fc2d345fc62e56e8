"""One way for every tool (train, batch-infer, evaluate, synth, data merge, pipeline) to take its
settings: a pydantic model whose fields are the YAML keys of ``--from-config FILE`` and, with
dashes for underscores, the command-line flags (``ft_model_id`` <-> ``--ft-model-id``).

Precedence: the model's defaults, then the file, then the flags given on the command line.
Booleans get a pair of flags (``--lm-response-append`` / ``--no-lm-response-append``) so a value
from the file can always be turned off again. ``${VAR}`` / ``${VAR:-default}`` work in the file
as in ``standby.yaml``. Every problem is one :class:`ConfigError` line naming the flag or the
file and key, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from standby.config import interpolate, read_yaml
from standby.errors import ConfigError, first_problem

T = TypeVar("T", bound=BaseModel)


class ToolConfig(BaseModel):
    """Base of every tool's settings: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``, ``Annotated[X, ...]`` -> ``X``; anything else unchanged."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _structured(text: str) -> Any:
    """A dict or list flag value: JSON (or YAML flow style, ``{a: 1}``)."""
    import yaml

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"not JSON or YAML: {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """``--from-config FILE`` and one flag per field of ``model``, help from its description."""
    parser.add_argument(
        "--from-config", metavar="FILE", help="YAML file with these settings (flags given here win)"
    )
    for name, field in model.model_fields.items():
        kind = _unwrap_optional(field.annotation)
        origin = get_origin(kind)
        if field.is_required():
            shown = " (required)"
        else:
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else f" (default: {default})"
        help_text = (field.description or "") + shown
        common: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            parser.add_argument(flag_of(name), action=argparse.BooleanOptionalAction, **common)
        elif origin is Literal:
            parser.add_argument(flag_of(name), choices=[str(a) for a in get_args(kind)], **common)
        elif (
            origin in (list, tuple, set)
            and get_args(kind)
            and get_args(kind)[0]
            in (
                str,
                int,
                float,
            )
        ):
            item = get_args(kind)[0]
            parser.add_argument(flag_of(name), nargs="*", type=item, metavar=name.upper(), **common)
        elif kind in (int, float, str):
            parser.add_argument(flag_of(name), type=kind, metavar=name.upper(), **common)
        elif kind is Path:
            parser.add_argument(flag_of(name), metavar="PATH", **common)
        elif kind is SecretStr:  # a key: plain text on the command line, never shown back
            parser.add_argument(flag_of(name), metavar="SECRET", **common)
        else:  # dicts, nested models, annotated types: JSON/YAML text, validated by the model
            parser.add_argument(flag_of(name), type=_structured, metavar="JSON", **common)


def add_tool_command(
    subparsers: argparse._SubParsersAction[Any],
    name: str,
    model: type[T],
    func: Callable[[T, argparse.Namespace], None],
    *,
    help: str,
    description: str | None = None,
    json_help: str | None = "print the result as JSON",
) -> argparse.ArgumentParser:
    """A sub-command that takes ``model``'s settings (``--from-config`` and the same-named
    flags), ``--json`` unless ``json_help`` is None, and runs ``func(settings, args)`` with the
    settings resolved (``resolve_config``: a ConfigError names the flag or the file)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description or help
    )
    add_config_flags(parser, model)
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    parser.set_defaults(func=lambda args: func(resolve_config(model, args), args))
    return parser


def resolve_config(model: type[T], args: argparse.Namespace) -> T:
    """The settings: defaults, then ``args.from_config``'s keys, then the flags that were given."""
    source = getattr(args, "from_config", None)
    data: dict[str, Any] = {}
    if source:
        raw = read_yaml(source)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of settings at the top level")
        try:
            data = interpolate(raw, "")
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    flags = {k: getattr(args, k) for k in model.model_fields if hasattr(args, k)}
    try:
        return model.model_validate({**data, **flags})
    except ValidationError as e:
        raise ConfigError(_one_line(e, flags, source)) from None


def _one_line(err: ValidationError, flags: dict[str, Any], source: str | None) -> str:
    problem = first_problem(err)
    loc = problem.loc.split(".") if problem.loc else []
    msg = problem.msg
    key = loc[0] if loc else ""
    suffix = problem.suffix
    if problem.type == "missing":
        where = f" or {key} in {source}" if source else f" or {key} in a --from-config file"
        return f"{flag_of(key)} is required (give {flag_of(key)}{where}){suffix}"
    if problem.type == "extra_forbidden":
        return f"{source}: {'.'.join(loc)}: unknown setting{suffix}"
    if key in flags:
        return f"{flag_of(key)}: {msg}{suffix}"
    where = f"{source}: " if source else ""
    return f"{where}{'.'.join(loc) or 'settings'}: {msg}{suffix}"
