"""`erasekit erase`: run an erasure method on a model and write its artifact folder.

Options, lowest to highest: the recipe (`--recipe NAME|FILE`, default: the domain's recipe for the method and
the kind of concept; `erasekit recipes` lists them), `--config cfg.yaml`, `--set key=value` (YAML values, dotted
keys for nested options), then the named flags. Rerunning the same command resumes from the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Config, Device, Dtype, Json, Model, Seed, Sets, TextEncoder, Unet
from erasekit.config import parse_sets
from erasekit.domains import domain_for, method_config, run_method
from erasekit.methods import METHODS


@app.command()
def erase(
    method: Annotated[str, typer.Option("--method", help=" | ".join(METHODS))],
    concept: Annotated[list[str], typer.Option("--concept", help="Concept to erase (repeat for several).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder (artifact + checkpoint).")],
    model: Model = "shapes",
    recipe: Annotated[str | None, typer.Option("--recipe", help="Shipped recipe name or YAML file.")] = None,
    text_encoder: TextEncoder = None,
    unet: Unet = None,
    config: Config = None,
    sets: Sets = [],  # noqa: B006
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps / iterations.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="x_t per step.")] = None,
    component: Annotated[str | None, typer.Option(help="unet | text_encoder")] = None,
    part: Annotated[str | None, typer.Option(help="unet: xattn|noxattn|full; text_encoder: all|attn|mlp")] = None,
    layers: Annotated[list[int], typer.Option("--layer", help="Text-encoder layer to train (repeatable).")] = [],  # noqa: B006
    eta: Annotated[float | None, typer.Option(help="ESD negative guidance eta.")] = None,
    seed: Seed = None,
    gamma: Annotated[
        float | None, typer.Option(help="Retain-term weight, eq. 6 (ESD: 0 = the paper; AdvUnlearn: 0 = AT-ESD).")
    ] = None,
    anchor: Annotated[
        list[str] | None,
        typer.Option(help="Eq. 2's reference: each prompt with the concept replaced by this word ('' drops it)."),
    ] = None,
    xt_mode: Annotated[str | None, typer.Option(help="ESD: ddim (faithful) | cached")] = None,
    schedule: Annotated[str | None, typer.Option(help="AdvUnlearn: faithful | cheap")] = None,
    warmup: Annotated[int | None, typer.Option(help="AdvUnlearn: plain-ESD iterations first.")] = None,
    ddim_steps: Annotated[int | None, typer.Option(help="DDIM steps of the x_t sampler.")] = None,
    cache_size: Annotated[int | None, typer.Option(help="Cached trajectories per bank (cheap x_t).")] = None,
    retain_batch: Annotated[int | None, typer.Option(help="Retain prompts per step (gamma > 0).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    device: Device = None,
    dtype: Dtype = None,
    as_json: Json = False,
) -> None:
    """Erase CONCEPT from MODEL with METHOD; writes the changed parts + erasekit.json to OUTPUT."""
    flags = {
        "steps": steps, "lr": lr, "batch_size": batch_size, "component": component, "part": part,
        "layers": layers, "eta": eta, "seed": seed, "gamma": gamma, "anchor": anchor, "xt_mode": xt_mode,
        "schedule": schedule, "warmup": warmup, "ddim_steps": ddim_steps, "cache_size": cache_size,
        "retain_batch": retain_batch, "checkpoint_every": checkpoint_every,
    }  # fmt: skip
    domain = domain_for(model)
    cfg, name = method_config(domain, method, concept, recipe, config, parse_sets(sets), flags)
    summary = run_method(domain, method, cfg, output, device, dtype, text_encoder, unet)
    summary["recipe"] = name
    typer.echo(json.dumps(summary, default=str) if as_json else f"{method} ({name}): wrote {output}")
