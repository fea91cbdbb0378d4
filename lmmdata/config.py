"""Config dataclasses: load from YAML, override from the CLI, save beside outputs.

Each command has one dataclass that is the single source of truth for its
options. `resolve` merges defaults < YAML file < CLI flags (flags left unset are
None and do not override), and checks for unknown keys so a typo in a YAML file
fails at once instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .staging import write_atomic

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad setting: the run cannot start. The message says how to fix it."""


class MissingOptions(ConfigError):
    """Required options were given neither on the command line nor in the config file."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"missing required option(s): {', '.join(names)}")
        self.names = names


def resolve(cls: type[T], config_file: str | os.PathLike | None = None, **overrides: Any) -> T:
    """Build `cls` from its defaults, then a YAML file, then non-None overrides."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a YAML mapping of option: value")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values.update(loaded)
    for k, v in overrides.items():
        if k not in names:
            raise ConfigError(f"unknown option {k!r} for {cls.__name__}")
        if v is not None and not (isinstance(v, (list, tuple)) and not v and k in values):
            values[k] = list(v) if isinstance(v, tuple) else v
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values  # type: ignore[arg-type]
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise MissingOptions(missing)
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_beside(output: str | os.PathLike, cfg: Any, stats: dict[str, Any] | None = None) -> Path:
    """Write `<output>.config.yaml`: command line, resolved config and summary."""
    out = Path(output)
    path = out.parent / f"{out.name}.config.yaml" if not out.is_dir() else out / "config.yaml"
    doc = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "config": to_dict(cfg)}
    if stats is not None:
        doc["summary"] = stats
    write_atomic(path, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return path
