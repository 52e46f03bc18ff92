"""Strict dataclasses read from YAML and ``key=value`` overrides: the machinery beneath ``agents.run.config``'s schema.

Every key is checked against the dataclass fields: an unknown key, or a value of the wrong type, raises
``UrgateError`` naming the key and the valid ones (with "did you mean"). Nested dataclasses are sections; a
``dict`` field is free-form. A dataclass that wants range checks defines ``_validate(self, prefix)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigValueError, UrgateError


class Strict:
    """Conversions of a strict dataclass: from a (partial) dict or YAML file, checked; to a dict or YAML text."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        """Build and validate from a (possibly partial) dict; missing keys take the defaults.

        :param data: nested dict, e.g. from a YAML file
        :param source: where the dict came from, for error messages
        """
        return _build(cls, data, "", source)

    @classmethod
    def from_yaml(cls, path: str | Path):
        """Read a YAML file (e.g. a run directory's ``config.yaml``), strictly."""
        return cls.from_dict(read_yaml(Path(path)), source=str(path))


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is parsed as YAML (``64`` -> int, ``[64, 64]`` -> list, ``null`` -> None)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UrgateError(f"an override must look like key=value (e.g. ppo.n_steps=64), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UrgateError(f"cannot parse the value of override {item!r}: {exc.__class__.__name__}") from None
    return key, value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UrgateError(f"cannot read config {str(path)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UrgateError(f"config {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UrgateError(f"config {str(path)!r} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def name_hint(name: Any, valid) -> str:
    """``did you mean 'ur'?`` for a near miss of ``valid``, with a word on case when only the case is wrong, or an
    empty string."""
    valid = list(valid)
    if isinstance(name, str) and name != name.lower() and name.lower() in valid:
        return f"names are lower case: did you mean '{name.lower()}'?"
    close = difflib.get_close_matches(str(name), valid, n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` (``name_hint`` in parentheses), or an empty string."""
    hint = name_hint(name, valid)
    return f" ({hint})" if hint else ""


def require(ok: bool, key: str, what: str, value: Any = None, hint: str = "") -> None:
    """Raise ``ConfigValueError``: ``config key 'KEY' must be WHAT, got VALUE (HINT)`` unless ``ok``."""
    if not ok:
        raise ConfigValueError(key, value, what, hint)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(cls, key: str, prefix: str, source: str) -> UrgateError:
    valid = [f.name for f in dataclasses.fields(cls)]
    where = f" in '{prefix[:-1]}'" if prefix else ""
    return UrgateError(
        f"unknown config key '{prefix}{key}'{did_you_mean(key, valid)} ({source}); valid keys{where}: {', '.join(valid)}"
    )


def merge(base: dict[str, Any], new: dict[str, Any], cls, prefix: str, source: str) -> dict[str, Any]:
    """``base`` updated by ``new`` key by key inside dataclass sections; a free-form dict value replaces."""
    hints = _hints(cls)
    out = dict(base)
    for key, value in new.items():
        if key not in hints:
            raise _unknown_key(cls, key, prefix, source)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            out[key] = merge(base.get(key, {}), value, hints[key], f"{prefix}{key}.", source)
        else:
            out[key] = value
    return out


def set_dotted(root: type, data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` (``ppo.n_steps``) in the nested dict ``data`` of the dataclass ``root``, checking each
    part; a whole section given as a dict is merged into the one there."""
    parts = key.split(".")
    cls, node, prefix = root, data, ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if cls is not None:
            hints = _hints(cls)
            if part not in hints:
                raise _unknown_key(cls, part, prefix, "--set")
            sub = hints[part]
            cls = sub if dataclasses.is_dataclass(sub) else None
            if not last and cls is None and typing.get_origin(sub) is not dict:
                raise UrgateError(
                    f"config key '{prefix}{part}' is {type_name(sub)}, it has no sub-key '{parts[i + 1]}'"
                )
        if last:
            if cls is not None and isinstance(value, dict):  # a whole section: merge, keep the other keys
                value = merge(node.get(part) or {}, value, cls, prefix + part + ".", "--set")
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        prefix += part + "."


def type_name(hint: Any) -> str:
    """How a type annotation reads in a message: ``an integer``, ``a number or null``, ``mapping``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is dict or hint is dict:
        return "mapping"
    names = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except UrgateError:
                pass
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return _build(hint, value, key + ".", source)
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e5" as a string
            try:
                as_float = float(value)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigValueError(key, value, type_name(hint), source=source)


def _build(cls, data: dict[str, Any], prefix: str, source: str):
    if not isinstance(data, dict):
        raise UrgateError(f"config section '{prefix[:-1] or 'top level'}' must be a mapping ({source})")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown_key(cls, key, prefix, source)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}", source)
    obj = cls(**kwargs)
    obj._validate(prefix)
    return obj
