"""`erasekit sae train`: a TopK sparse autoencoder on one text-encoder layer (the SAE that ItD patches reuse)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Model, Seed, Sets, TextEncoder
from erasekit.config import given, load_recipe, parse_sets, read_yaml, resolve
from erasekit.domains import domain_for
from erasekit.domains.sd_itd import sd_itd_corpus
from erasekit.domains.shapes_itd import shapes_itd_corpus
from erasekit.methods.itd import SaeConfig, train_layer_sae
from erasekit.pipeline import load_pipeline

sae_app = typer.Typer(help="Sparse autoencoders on the text encoder (for ItD).", no_args_is_help=True)
app.add_typer(sae_app, name="sae")


@sae_app.command("train")
def train(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the SAE (and its resumable checkpoint).")],
    model: Model = "shapes",
    text_encoder: TextEncoder = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Corpus (.txt or .csv); default: the domain's.")
    ] = None,
    n_prompts: Annotated[int | None, typer.Option("--n-prompts", help="World prompts to generate.", min=10)] = None,
    layer: Annotated[int | None, typer.Option("--layer", help="Text-encoder block (0-based).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Number of latents.", min=1)] = None,
    k: Annotated[int | None, typer.Option("--k", help="Active latents per token.", min=1)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps.", min=1)] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML of SAE options (width, k, aux_k, aux_coef, lr, ...).")
    ] = None,
    sets: Sets = [],  # noqa: B006
    skip_padding: Annotated[bool, typer.Option("--skip-padding", help="Leave padding tokens out.")] = False,
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Train a TopK SAE on a text-encoder layer; prints its FVU and dead-latent count."""

    overrides = {
        "layer": layer, "width": width, "k": k, "steps": steps, "seed": seed, "corpus_size": n_prompts,
        "prompts_file": str(prompts) if prompts else None, "skip_padding": skip_padding or None,
    }  # fmt: skip
    domain = domain_for(model)
    recipe = {k: v for k, v in load_recipe(f"{domain.name}/itd").items() if k in SaeConfig.model_fields}
    cfg = resolve(SaeConfig, recipe, read_yaml(config) if config else {}, parse_sets(sets), given(overrides))
    corpus = (shapes_itd_corpus if domain.name == "shapes" else sd_itd_corpus)(cfg)
    pipe = load_pipeline(model, text_encoder=text_encoder)
    sae, stats = train_layer_sae(pipe, corpus, cfg, output / "sae_checkpoint", progress=True)
    sae.save(output, {**stats, "model": model, "config": cfg.model_dump()})
    shutil.rmtree(output / "sae_checkpoint", ignore_errors=True)  # only needed to resume an interrupted run
    summary = {**stats, "width": sae.width, "k": sae.k, "output": str(output)}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"SAE on layer {cfg.layer}: FVU {stats['fvu']:.4f}, dead latents {stats['dead_latents']}/{sae.width}, "
            f"{stats['tokens']} tokens -> {output}"
        )
