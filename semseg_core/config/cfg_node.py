"""A small, strict YAML config tree in the spirit of detectron2/yacs.

Every key must exist in the defaults (`defaults.py`); a YAML file or a command-line override may only change
values, never invent keys, and a new value must have the default's type. `_BASE_` inherits from another
YAML file, resolved relative to the including file.
"""
from __future__ import annotations

import ast
import copy
import os
from typing import Any, Iterable, List, Optional

import yaml

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, unreadable file, ...)."""


def _where(source: Optional[str]) -> str:
    return f" (in {source})" if source else ""


class CfgNode(dict):
    """Nested dict with attribute access. `freeze()` makes the whole tree read-only."""

    _FROZEN = "__frozen__"

    def __init__(self, init: Optional[dict] = None):
        super().__init__()
        object.__setattr__(self, CfgNode._FROZEN, False)
        for key, value in (init or {}).items():
            self[key] = CfgNode(value) if isinstance(value, dict) and not isinstance(value, CfgNode) else value

    # -- attribute access ------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if self.is_frozen():
            raise ConfigError(f"cannot set {name!r}: the config is frozen (call defrost() first)")
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if getattr(self, CfgNode._FROZEN, False):
            raise ConfigError(f"cannot set {key!r}: the config is frozen (call defrost() first)")
        super().__setitem__(key, value)

    def __deepcopy__(self, memo):
        return CfgNode({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __reduce__(self):  # pickling (e.g. DataLoader workers) keeps types and the frozen flag
        return (_unpickle_cfg, (dict(self), self.is_frozen()))

    # -- freezing --------------------------------------------------------------------------------------
    def freeze(self) -> "CfgNode":
        self._set_frozen(True)
        return self

    def defrost(self) -> "CfgNode":
        self._set_frozen(False)
        return self

    def is_frozen(self) -> bool:
        return object.__getattribute__(self, CfgNode._FROZEN)

    def _set_frozen(self, frozen: bool) -> None:
        object.__setattr__(self, CfgNode._FROZEN, frozen)
        for value in self.values():
            if isinstance(value, CfgNode):
                value._set_frozen(frozen)

    def clone(self) -> "CfgNode":
        return copy.deepcopy(self)

    # -- (de)serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain nested dicts and lists (tuples become lists), as YAML writes them."""
        def plain(value):
            if isinstance(value, CfgNode):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value
        return plain(self)

    def dump(self, **kwargs) -> str:
        """The whole tree as YAML text; `merge_from_str(cfg.dump())` on fresh defaults restores it."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, **kwargs)

    @classmethod
    def load_yaml_str(cls, text: str) -> "CfgNode":
        """Parse YAML text into a CfgNode as is (no validation; see `merge_from_str` for that)."""
        data = yaml.safe_load(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config YAML must be a mapping, got {type(data).__name__}")
        return cls(data)

    # -- merging ---------------------------------------------------------------------------------------
    def merge_from_file(self, path: str, _stack: Optional[List[str]] = None) -> "CfgNode":
        """Merge a YAML file (after its `_BASE_` chain, which is resolved relative to the file)."""
        path = os.path.abspath(os.fspath(path))
        stack = list(_stack or [])
        if path in stack:
            raise ConfigError(f"_BASE_ cycle: {' -> '.join(stack + [path])}")
        data = _read_yaml_file(path)
        base = data.pop(BASE_KEY, None)
        if base is not None:
            bases = [base] if isinstance(base, str) else base
            if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
                raise ConfigError(f"{BASE_KEY} must be a path or a list of paths{_where(path)}")
            for base_path in bases:
                base_path = os.path.expanduser(base_path)
                if not os.path.isabs(base_path):
                    base_path = os.path.join(os.path.dirname(path), base_path)
                if not os.path.isfile(base_path):
                    raise ConfigError(f"{BASE_KEY} file not found: {base_path}{_where(path)}")
                self.merge_from_file(base_path, stack + [path])
        self._merge_dict(data, prefix="", source=path)
        return self

    def merge_from_str(self, text: str, source: str = "<string>") -> "CfgNode":
        """Merge YAML text (e.g. the config stored in a checkpoint), validated like a file."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"invalid YAML{_where(source)}: {err}") from None
        if data is None:
            return self
        if not isinstance(data, dict):
            raise ConfigError(f"config YAML must be a mapping{_where(source)}")
        data.pop(BASE_KEY, None)
        self._merge_dict(data, prefix="", source=source)
        return self

    def merge_from_other_cfg(self, other: "CfgNode") -> "CfgNode":
        self._merge_dict(other.to_dict(), prefix="", source="<other config>")
        return self

    def merge_from_list(self, opts: Iterable[str], source: str = "command line") -> "CfgNode":
        """Apply `["A.B", "value", ...]`; values are YAML literals (`0.01`, `[1, 2]`, `true`, `null`)."""
        opts = list(opts)
        if len(opts) % 2 != 0:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number of items{_where(source)}: {opts}")
        for full_key, raw in zip(opts[0::2], opts[1::2]):
            if not isinstance(full_key, str):
                raise ConfigError(f"override key must be a string, got {full_key!r}{_where(source)}")
            node = self
            parts = full_key.split(".")
            for i, part in enumerate(parts[:-1]):
                child = node.get(part)
                if not isinstance(child, CfgNode):
                    raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r}{_where(source)}")
                node = child
            leaf = parts[-1]
            if leaf not in node:
                raise ConfigError(f"unknown config key {full_key!r}{_where(source)}")
            default = node[leaf]
            value = _parse_literal(raw) if isinstance(raw, str) else raw
            if isinstance(default, str) and isinstance(raw, str) and not isinstance(value, str) and value is not None:
                value = raw  # a string key given `2024` or `true` keeps the text as typed
            node[leaf] = _coerce(value, default, full_key, source)
        return self

    def _merge_dict(self, data: dict, prefix: str, source: Optional[str]) -> None:
        for key, value in data.items():
            full_key = f"{prefix}{key}"
            if key not in self:
                raise ConfigError(f"unknown config key {full_key!r}{_where(source)}")
            default = self[key]
            if isinstance(default, CfgNode):
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"config key {full_key!r} is a section and needs a mapping, got {value!r}{_where(source)}")
                default._merge_dict(value, prefix=full_key + ".", source=source)
            else:
                self[key] = _coerce(value, default, full_key, source)


def _unpickle_cfg(items: dict, frozen: bool) -> CfgNode:
    node = CfgNode(items)
    return node.freeze() if frozen else node


def _read_yaml_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in {path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at top level, got {type(data).__name__}")
    return data


def _parse_literal(text: str) -> Any:
    """YAML literal; failing that a Python literal (detectron2 users write `"('a', 'b')"`); else the text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return value


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(value: Any, default: Any, key: str, source: Optional[str]) -> Any:
    """Return `value` converted to the default's type, or raise ConfigError naming the key."""
    if default is None or value is None:
        return value  # None defaults take any type; any key may be set to null
    if isinstance(value, dict):
        raise ConfigError(f"config key {key!r} expects {_type_name(default)}, got a mapping{_where(source)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # PyYAML reads `1e-4` (no dot) as a string; accept it for float keys
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(default)(_to_nested(value, type(default)))
    else:
        raise ConfigError(f"config key {key!r} has an unsupported default type {_type_name(default)}")
    raise ConfigError(
        f"config key {key!r} expects {_type_name(default)} (default {default!r}), "
        f"got {_type_name(value)} {value!r}{_where(source)}")


def _to_nested(value, seq_type):
    return [seq_type(_to_nested(v, seq_type)) if isinstance(v, (list, tuple)) else v for v in value]
