"""`erasekit generate`: a grid of images from a prompt, with any erased parts loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field

from erasekit.cli import app
from erasekit.cli import options as opt
from erasekit.config import given, parse_sets, read_yaml, resolve
from erasekit.generation import generate as run
from erasekit.imaging import save_grid
from erasekit.methods import erased_parts, load_erased
from erasekit.pipeline import resolve_device


class GenerateConfig(BaseModel):
    """Options of `erasekit generate` (images i get seeds seed + i)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=1)
    seed: int = 0
    sample_steps: int = Field(25, ge=1)
    guidance: float = 5.0
    batch_size: int = Field(8, ge=1)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    model: opt.Model = "shapes",
    artifact: opt.Artifact = None,
    text_encoder: opt.TextEncoder = None,
    unet: opt.Unet = None,
    patch: opt.Patch = None,
    n: Annotated[int | None, typer.Option("-n", help="Number of images.", min=1)] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG grid to write.")] = Path("grid.png"),
    seed: opt.Seed = None,
    sample_steps: opt.SampleSteps = None,
    guidance: opt.Guidance = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    config: opt.Config = None,
    sets: opt.Sets = [],  # noqa: B006
    as_json: opt.Json = False,
) -> None:
    """Generate N images for PROMPT (seeds seed..seed+N-1) and save them as one PNG grid."""
    flags = {"n": n, "seed": seed, "sample_steps": sample_steps, "guidance": guidance}
    cfg = resolve(GenerateConfig, read_yaml(config) if config else {}, parse_sets(sets), given(flags))
    parts = erased_parts(artifact, text_encoder, unet, patch)
    pipe = load_erased(model, parts, device=resolve_device(device), dtype=dtype)
    seeds = list(range(cfg.seed, cfg.seed + cfg.n))
    images = run(pipe, [prompt] * cfg.n, seeds, cfg.sample_steps, cfg.guidance, cfg.batch_size, progress=True)
    save_grid(images, output)
    summary = {"prompt": prompt, "model": model, "parts": parts, **cfg.model_dump(), "output": str(output)}
    typer.echo(json.dumps(summary) if as_json else f"wrote {cfg.n} images to {output}")
