"""Configs: pydantic models filled from an optional YAML file, then overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from erasekit.errors import ErasekitError

C = TypeVar("C", bound=BaseModel)


def load_config(cls: type[C], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """`cls` from YAML keys, then `overrides` (flags; None values mean "not given") on top."""
    data: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ErasekitError(f"config file {path} not found: pass an existing YAML file to --config")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ErasekitError(f"config file {path} must hold a mapping of option: value")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(data) - set(cls.model_fields)
    if unknown:
        raise ErasekitError(
            f"unknown option(s) {sorted(unknown)} for {cls.__name__}: valid are {sorted(cls.model_fields)}"
        )
    try:
        return cls(**data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ErasekitError(f"bad value for '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
