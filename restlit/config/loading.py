"""Reading a run configuration: YAML (or a dict) -> typed dataclasses, with one-line errors.

Every key is checked against its dataclass and its type; values are coerced from YAML's types
(``1e-6`` read as a string becomes a float, a list a tuple where the field asks for one), and
ranges are checked after the object is built. ``--set a.b=VALUE`` overrides apply on top.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from restlit.config.sections import RunConfig
from restlit.errors import UserError


class ConfigError(UserError, ValueError):
    """A config key or value the user must fix; the message is one line."""


# ------------------------------------------------------------------------------------------------
# Building from plain data, with one-line errors
# ------------------------------------------------------------------------------------------------


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys: {', '.join(f.name for f in dataclasses.fields(tp))}"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` or a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value in args:
            return value
        shown = value if isinstance(value, str) else repr(value)
        raise ConfigError(f"{key}: {shown!r} is not allowed; choose {_describe(tp)}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and dataclasses.is_dataclass(options[0]) and isinstance(value, dict):
            return _coerce(value, options[0], key)  # an optional section: its own error names the field
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):  # no setting of restlit means anything at inf or NaN
            raise ConfigError(f"{key}: must be a finite number, got {number}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a bug in the dataclasses, not user input


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(fields)}")
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def _parse_override(item: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=2e-6")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


# (key, test, allowed range) checked after building; the message names the key and the range.
_RANGES: list[tuple[str, Any, str]] = [
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.lr", lambda v: v <= 1, "<= 1 (a larger step sends the weights to inf/NaN)"),
    ("optim.eps", lambda v: v > 0, "> 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.grad_clip", lambda v: v >= 0, ">= 0 (0: no clipping)"),
    ("optim.betas", lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    ("optim.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("objective.loss.kl_coef", lambda v: v >= 0, ">= 0"),
    ("sft.lr", lambda v: v > 0, "> 0"),
    ("sft.lr", lambda v: v <= 1, "<= 1 (a larger step sends the weights to inf/NaN)"),
    ("rollout.n", lambda v: v >= 1, ">= 1"),
    ("rollout.temperature", lambda v: v >= 0, ">= 0 (0 samples greedily)"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("rollout.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("trainer.prompts_per_step", lambda v: v >= 1, ">= 1"),
    ("trainer.max_steps", lambda v: v >= 1, ">= 1"),
    ("trainer.num_nodes", lambda v: v >= 1, ">= 1"),
    ("sft.batch_size", lambda v: v >= 1, ">= 1"),
]


def check_ranges(config: RunConfig) -> RunConfig:
    """A ConfigError naming the first key outside its allowed range (see ``_RANGES``)."""
    for key, ok, allowed in _RANGES:
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        if not ok(value):
            raise ConfigError(f"{key}: must be {allowed}, got {value}")
    if config.rollout.n == 1:
        raise ConfigError("rollout.n: must be >= 2: GRPO's advantage is a completion's reward minus its "
                          "group's mean, so with one completion per prompt every advantage is 0")
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (or start from the defaults), apply ``KEY=VALUE`` overrides, validate."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = path.read_bytes()
            data = yaml.safe_load(raw.decode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                              f"save the config as UTF-8") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if data is None:
            raise ConfigError(f"{path}: the config is empty; start from one in configs/")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return check_ranges(_build(RunConfig, data))


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (readable back by :func:`load_config`)."""
    import yaml

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

