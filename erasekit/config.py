"""Options: pydantic models resolved from layers of plain data with one merge rule, and the shipped recipes.

    recipe (YAML shipped in erasekit/recipes/<domain>/<name>.yaml)  <  --config YAML  <  --set key=value  <  flags

`resolve(cls, *layers)` deep-merges the layers left to right (a later layer wins; nested mappings merge key by key)
and validates the result once. `config_hash` fingerprints a resolved config, so an artifact can tell whether it
was made by the same options.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from erasekit.errors import ErasekitError

C = TypeVar("C", bound=BaseModel)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, or a one-line error naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise ErasekitError(f"config file {path} not found: pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ErasekitError(f"{path} is not valid YAML ({type(e).__name__}): fix the file") from None
    if not isinstance(data, dict):
        raise ErasekitError(f"config file {path} must hold a mapping of option: value")
    return data


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["a=1", "attack.steps=30"] -> {"a": 1, "attack": {"steps": 30}} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ErasekitError(f"--set expects key=value, got '{item}'")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ErasekitError(f"--set {item}: the value is not valid YAML; quote it") from None
    return out


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags a user actually gave (None and [] mean "not given")."""
    return {k: v for k, v in flags.items() if v is not None and v != []}


def resolve(cls: type[C], *layers: dict[str, Any]) -> C:
    """`cls` from the layers merged left to right (later wins); unknown keys and bad values are one-line errors."""
    data: dict[str, Any] = {}
    for layer in layers:
        data = deep_merge(data, layer or {})
    unknown = set(data) - set(cls.model_fields)
    if unknown:
        raise ErasekitError(
            f"unknown option(s) {sorted(unknown)} for {cls.__name__}: valid are {sorted(cls.model_fields)}"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        raise ErasekitError(f"bad value for '{where}': {msg}" if where else f"bad {cls.__name__}: {msg}") from None


def load_config(cls: type[C], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """`cls` from an optional YAML file, then `overrides` (flags; None values mean "not given")."""
    return resolve(cls, read_yaml(yaml_path) if yaml_path is not None else {}, given(overrides or {}))


def config_hash(config: BaseModel) -> str:
    """sha256 of the resolved options (JSON, keys sorted): equal hashes mean the same run."""
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


# ---- recipes ---------------------------------------------------------------------------------------------------
def _recipe_root() -> Path:
    return Path(str(resources.files("erasekit").joinpath("recipes")))


def list_recipes() -> list[dict[str, str]]:
    """[{"name": "shapes/advunlearn", "domain": ..., "method": ..., "about": first comment line}] of shipped recipes."""
    out = []
    for path in sorted(_recipe_root().glob("*/*.yaml")):
        first = path.read_text().splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        name = f"{path.parent.name}/{path.stem}"
        out.append({"name": name, "domain": path.parent.name, "method": path.stem.split("-")[0], "about": about})
    return out


def recipe_path(name: str) -> Path:
    """The YAML file of a recipe given as a shipped name ("sd/advunlearn-nudity") or a file path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    shipped = _recipe_root() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(r["name"] for r in list_recipes())
    raise ErasekitError(f"unknown recipe '{name}': pass a YAML file or one of {names} (see `erasekit recipes`)")


def load_recipe(name: str) -> dict[str, Any]:
    """A recipe's options (plain YAML mapping)."""
    return read_yaml(recipe_path(name))
