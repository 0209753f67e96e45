"""`erasekit erase`: run an erasure method on a pipeline and write its artifact (a generic dispatcher).

Options come from, in order: the method's defaults, `--config cfg.yaml`, `--set key=value` (YAML-parsed values,
dotted keys for nested options), then the named flags. Rerunning the same command resumes from the checkpoint.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from erasekit.cli import app
from erasekit.cli.options import Model, TextEncoder, Unet
from erasekit.errors import ErasekitError

METHODS: dict[str, tuple[str, str]] = {
    "esd": ("erasekit.methods.esd", "EsdConfig"),
    "advunlearn": ("erasekit.methods.advunlearn", "AdvUnlearnConfig"),
    "itd": ("erasekit.methods.itd", "ItdConfig"),
}


def load_method(name: str) -> tuple[Any, type]:
    """(module with `erase`, its config class), or a one-line error for an unknown or missing method."""
    if name not in METHODS:
        raise ErasekitError(f"unknown method '{name}': use one of {', '.join(METHODS)}")
    module_name, config_name = METHODS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise ErasekitError(
                f"method '{name}' is not available in this installation ({module_name} is missing)"
            ) from None
        raise
    return module, getattr(module, config_name)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["a=1", "attack.steps=30"] -> {"a": 1, "attack": {"steps": 30}} (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ErasekitError(f"--set expects key=value, got '{item}'")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ErasekitError(f"config file {path} not found: pass an existing YAML file to --config")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ErasekitError(f"config file {path} must hold a mapping of option: value")
    return data


def merge_options(config_cls: type, yaml_path: Path | None, sets: dict[str, Any], flags: dict[str, Any]):
    """The method's config from YAML, then --set, then flags (None = not given); flags the method lacks are errors."""
    from erasekit.config import load_config

    given = {k: v for k, v in flags.items() if v is not None and v != []}
    lacking = sorted(set(given) - set(config_cls.model_fields))
    if lacking:
        raise ErasekitError(f"option(s) {lacking} do not apply to {config_cls.__name__}; drop them")
    base = _read_yaml(yaml_path) if yaml_path else {}
    for layer in (sets, given):
        for k, v in layer.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return load_config(config_cls, None, base)


@app.command()
def erase(
    method: Annotated[str, typer.Option("--method", help="esd | advunlearn | itd")],
    concept: Annotated[list[str], typer.Option("--concept", help="Concept to erase (repeat for several).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder (artifact + checkpoint).")],
    model: Model = "shapes",
    text_encoder: TextEncoder = None,
    unet: Unet = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of the method's options.")] = None,
    sets: Annotated[list[str], typer.Option("--set", help="key=value option override (repeatable).")] = [],  # noqa: B006
    steps: Annotated[int | None, typer.Option(help="Training steps / iterations.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="x_t per step.")] = None,
    component: Annotated[str | None, typer.Option(help="unet | text_encoder")] = None,
    part: Annotated[str | None, typer.Option(help="unet: xattn|noxattn|full; text_encoder: all|attn|mlp")] = None,
    layers: Annotated[list[int], typer.Option("--layer", help="Text-encoder layer to train (repeatable).")] = [],  # noqa: B006
    xt_mode: Annotated[str | None, typer.Option(help="ddim (faithful) | cached")] = None,
    eta: Annotated[float | None, typer.Option(help="ESD negative guidance eta.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    gamma: Annotated[
        float | None, typer.Option(help="Retain-term weight, eq. 6 (ESD: 0 = the paper; AdvUnlearn: 0 = AT-ESD).")
    ] = None,
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            help="Eq. 2's reference: each prompt with the concept replaced by this word ('' drops it; repeat to "
            "average several). AdvUnlearn on the shapes world: the concept's nearest value (circle -> square)."
        ),
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="AdvUnlearn: plain-ESD iterations first.")] = None,
    schedule: Annotated[str | None, typer.Option(help="AdvUnlearn: faithful | cheap")] = None,
    attack_steps: Annotated[int | None, typer.Option(help="AdvUnlearn: inner attack steps.")] = None,
    attack_every: Annotated[int | None, typer.Option(help="AdvUnlearn: refresh c* every N iterations.")] = None,
    retain_batch: Annotated[int | None, typer.Option(help="Retain prompts per step (gamma > 0).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Erase CONCEPT from MODEL with METHOD; writes the changed component + erasekit.json to OUTPUT."""
    from erasekit.methods import default_prompts
    from erasekit.pipeline import load_pipeline

    module, config_cls = load_method(method)
    flags = {
        "concepts": concept, "steps": steps, "lr": lr, "batch_size": batch_size, "component": component,
        "part": part, "layers": layers, "xt_mode": xt_mode, "eta": eta, "seed": seed,
        "checkpoint_every": checkpoint_every, "gamma": gamma, "warmup": warmup, "schedule": schedule,
        "attack": {"steps": attack_steps} if attack_steps is not None else None, "attack_every": attack_every,
        "retain_batch": retain_batch, "anchor": anchor,
    }  # fmt: skip
    cfg = merge_options(config_cls, config, parse_sets(sets), flags)
    cfg = default_prompts(cfg, model)
    pipe = load_pipeline(model, text_encoder=text_encoder, unet=unet)
    output.mkdir(parents=True, exist_ok=True)
    summary = module.erase(pipe, cfg, output)
    summary["model"] = model
    typer.echo(json.dumps(summary) if as_json else f"{method}: wrote {output} ({summary})")
