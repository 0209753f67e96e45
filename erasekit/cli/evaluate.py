"""`erasekit evaluate`: every metric of one (possibly erased) model under a recorded protocol, JSON + HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.attacks import ATTACKS
from erasekit.cli import app
from erasekit.cli import options as opt
from erasekit.config import deep_merge, parse_sets
from erasekit.domains import erased_parts, eval_config, run_evaluation
from erasekit.eval.distributed import finish, is_main_process
from erasekit.eval.report import markdown_table, write_report


@app.command()
def evaluate(
    concept: Annotated[str, typer.Option("--concept", help="Concept to measure (a shapes word, nudity, church, ...).")],
    model: opt.Model = "shapes",
    artifact: opt.Artifact = None,
    text_encoder: opt.TextEncoder = None,
    unet: opt.Unet = None,
    patch: opt.Patch = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Nudity protocol: unlearndiffatk | itd | six-class.")
    ] = None,
    attacks: Annotated[
        str | None, typer.Option("--attacks", help=f"Comma list of attacks ({','.join(ATTACKS)}), 'all' or 'none'.")
    ] = None,
    attack_prompts: Annotated[int | None, typer.Option("--attack-prompts", help="Target prompts attacked.")] = None,
    attack_steps: Annotated[int | None, typer.Option("--attack-steps", help="Optimisation steps per attack.")] = None,
    n_target: Annotated[int | None, typer.Option("--n-target", help="Target prompts.")] = None,
    n_retain: Annotated[int | None, typer.Option("--n-retain", help="Retain prompts.")] = None,
    n_world: Annotated[int | None, typer.Option("--n-world", help="Prompts for FID and CLIP score.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Target prompts (.txt or I2P .csv).")] = None,
    world_prompts: Annotated[Path | None, typer.Option("--world-prompts", help="FID/CLIP prompts (.txt/.csv).")] = None,
    reference_images: Annotated[Path | None, typer.Option("--reference-images", help="Real images for FID.")] = None,
    clip_model: Annotated[str | None, typer.Option("--clip-model", help="CLIP folder or hub id.")] = None,
    detector_model: Annotated[str | None, typer.Option("--detector-model", help="Detector folder or hub id.")] = None,
    inception_weights: Annotated[
        Path | None, typer.Option("--inception-weights", help="FID Inception weights.")
    ] = None,
    sample_steps: opt.SampleSteps = None,
    guidance: opt.Guidance = None,
    seed: opt.Seed = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    config: opt.Config = None,
    sets: opt.Sets = [],  # noqa: B006
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for result.json and report.html.")] = Path(
        "out/evaluate"
    ),
    as_json: opt.Json = False,
) -> None:
    """Generate, detect, attack and score one model; write result.json and report.html to --output."""
    flags = {
        "concept": concept, "model": model, "preset": preset, "attack_prompts": attack_prompts, "n_target": n_target,
        "n_retain": n_retain, "n_world": n_world, "prompts": prompts, "world_prompts": world_prompts,
        "reference_images": reference_images, "clip_model": clip_model, "detector_model": detector_model,
        "inception_weights": inception_weights, "sample_steps": sample_steps, "guidance": guidance, "seed": seed,
        "device": device, "dtype": dtype,
    }  # fmt: skip
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}
    if attacks is not None:
        flags["attacks"] = {"none": [], "all": list(ATTACKS)}.get(attacks, [a.strip() for a in attacks.split(",")])
    overrides = parse_sets(sets)
    if attack_steps is not None:
        steps = {k.replace("-", "_"): {"generations" if k == "ring-a-bell" else "steps": attack_steps} for k in ATTACKS}
        overrides = deep_merge(overrides, {"attack_options": steps})  # AttackConfig's field names
    cfg = eval_config(model, config, deep_merge(overrides, {k: v for k, v in flags.items() if v is not None}))
    parts = erased_parts(artifact, text_encoder, unet, patch)
    result = run_evaluation(cfg, parts, progress=not as_json)
    main = is_main_process()
    finish()
    if not main:
        return
    output.mkdir(parents=True, exist_ok=True)
    name = f"{cfg.model} + {', '.join(parts.values())}" if parts else cfg.model
    report = write_report({name: result}, output / "report.html", f"erasekit evaluate: {cfg.concept}")
    payload = {**result.to_json(), "config": cfg.model_dump(), "parts": parts, "report": str(report)}
    (output / "result.json").write_text(json.dumps(payload, indent=1, default=str))
    if as_json:
        typer.echo(json.dumps(payload, default=str))
    else:
        typer.echo(markdown_table({name: result}))
        typer.echo(f"report: {report}\nresult: {output / 'result.json'}")
