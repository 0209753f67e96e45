"""`erasekit generate`: a grid of images from a prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Guidance, Model, Seed, Steps, TextEncoder, Unet


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    model: Model = "shapes",
    text_encoder: TextEncoder = None,
    unet: Unet = None,
    n: Annotated[int, typer.Option("-n", help="Number of images.", min=1)] = 8,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG grid to write.")] = Path("grid.png"),
    seed: Seed = 0,
    steps: Steps = 25,
    guidance: Guidance = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Generate N images for PROMPT (seeds seed..seed+N-1) and save them as one PNG grid."""
    from erasekit.generation import generate as run
    from erasekit.imaging import save_grid
    from erasekit.pipeline import load_pipeline

    pipe = load_pipeline(model, text_encoder=text_encoder, unet=unet)
    images = run(pipe, [prompt] * n, list(range(seed, seed + n)), steps=steps, guidance=guidance, progress=True)
    save_grid(images, output)
    summary = {
        "prompt": prompt,
        "model": model,
        "n": n,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "output": str(output),
    }
    typer.echo(json.dumps(summary) if as_json else f"wrote {n} images to {output}")
