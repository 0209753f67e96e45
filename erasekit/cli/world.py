"""`erasekit world train|check`: build and verify the bundled shapes world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Config, Json, Seed, Sets
from erasekit.config import given, parse_sets, read_yaml, resolve
from erasekit.pipeline import bundle_dir, load_pipeline
from erasekit.world.check import CheckConfig, classifier_accuracy, generation_accuracy
from erasekit.world.evaluators import ShapeClassifier
from erasekit.world.train import WorldTrainConfig, export_bundle, train_world

world_app = typer.Typer(help="Train and check the bundled shapes world.", no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("train")
def train(
    work: Annotated[Path, typer.Option(help="Folder for checkpoints; rerun the same command to resume.")] = Path(
        "runs/world"
    ),
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write the bundle (default: the package's own).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of WorldTrainConfig options.")] = None,
    seed: Seed = 0,
    unet_steps: Annotated[int | None, typer.Option(help="UNet + text encoder steps.")] = None,
) -> None:
    """Train VAE, classifier, world CLIP and UNet + text encoder; export fp16 safetensors."""
    cfg = resolve(
        WorldTrainConfig, read_yaml(config) if config else {}, given({"seed": seed, "unet_steps": unet_steps})
    )
    models = train_world(work, cfg)
    out = output or bundle_dir()
    export_bundle(models, out, cfg)
    typer.echo(f"wrote the world bundle to {out}")


@world_app.command("check")
def check(
    n: Annotated[int | None, typer.Option("-n", help="Generated images to judge.", min=1)] = None,
    sample_steps: Annotated[int | None, typer.Option("--sample-steps", help="Sampling steps.", min=1)] = None,
    guidance: Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale.")] = None,
    seed: Seed = None,
    config: Config = None,
    sets: Sets = [],  # noqa: B006
    as_json: Json = False,
) -> None:
    """Classifier accuracy (crisp and VAE-reconstructed) and the pipeline's shape/colour accuracy."""
    flags = given({"n": n, "sample_steps": sample_steps, "guidance": guidance, "seed": seed})
    cfg = resolve(CheckConfig, read_yaml(config) if config else {}, parse_sets(sets), flags)
    pipe = load_pipeline("shapes")
    classifier = ShapeClassifier.load(bundle_dir() / "classifier")
    result = classifier_accuracy(classifier, pipe.vae, seed=12345 + cfg.seed)
    result.update(
        generation_accuracy(pipe, classifier, n=cfg.n, steps=cfg.sample_steps, guidance=cfg.guidance, seed=cfg.seed)
    )
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            typer.echo(f"{k:>18}: {v:.3f}" if isinstance(v, float) else f"{k:>18}: {v}")
