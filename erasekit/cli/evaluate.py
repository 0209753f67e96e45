"""`erasekit evaluate`: every metric of one (possibly erased) model under a recorded protocol, JSON + HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Guidance, Model, Seed, Steps, TextEncoder, Unet


@app.command()
def evaluate(
    concept: Annotated[str, typer.Option("--concept", help="Concept to measure: a shapes-world word or 'nudity'.")],
    model: Model = "shapes",
    text_encoder: TextEncoder = None,
    unet: Unet = None,
    patch: Annotated[Path | None, typer.Option("--patch", help="ItD patch folder to attach.")] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Nudity protocol: unlearndiffatk | itd | six-class.")
    ] = None,
    attacks: Annotated[
        str | None, typer.Option("--attacks", help="Comma list of attacks to run (soft,token) or 'none'.")
    ] = None,
    attack_prompts: Annotated[int | None, typer.Option("--attack-prompts", help="Target prompts attacked.")] = None,
    attack_steps: Annotated[int | None, typer.Option("--attack-steps", help="Optimisation steps per attack.")] = None,
    n_target: Annotated[int | None, typer.Option("--n-target", help="Target prompts.")] = None,
    n_retain: Annotated[int | None, typer.Option("--n-retain", help="Retain prompts (shapes world).")] = None,
    n_world: Annotated[int | None, typer.Option("--n-world", help="Prompts for FID and CLIP score.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="I2P-format CSV of target prompts.")] = None,
    coco: Annotated[Path | None, typer.Option("--coco", help="COCO caption CSV for FID / CLIP score.")] = None,
    reference_images: Annotated[Path | None, typer.Option("--reference-images", help="Real images for FID.")] = None,
    clip_model: Annotated[Path | None, typer.Option("--clip-model", help="Local CLIP folder for CLIP score.")] = None,
    classifier: Annotated[
        Path | None, typer.Option("--classifier", help="Shapes-world classifier folder (default: bundled).")
    ] = None,
    inception_weights: Annotated[
        Path | None, typer.Option("--inception-weights", help="FID Inception weights file (else CLIP features).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default: accelerate's).")] = None,
    steps: Steps = None,
    guidance: Guidance = None,
    seed: Seed = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of these options.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for result.json and report.html.")] = Path(
        "out/evaluate"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the protocol card and metrics as JSON.")] = False,
) -> None:
    """Generate, detect, attack and score one model; write result.json and report.html to --output."""
    from erasekit.config import load_config
    from erasekit.eval.distributed import finish, is_main_process
    from erasekit.eval.harness import EvalConfig
    from erasekit.eval.harness import evaluate as run
    from erasekit.eval.report import markdown_table, write_report

    overrides = {
        "concept": concept, "model": model, "text_encoder": text_encoder, "unet": unet, "patch": patch,
        "preset": preset, "attack_prompts": attack_prompts, "n_target": n_target, "n_retain": n_retain,
        "n_world": n_world, "prompts": prompts, "coco": coco, "reference_images": reference_images,
        "clip_model": clip_model, "classifier": classifier, "inception_weights": inception_weights, "steps": steps, "guidance": guidance,
        "seed": seed, "device": device,
    }  # fmt: skip
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    if attacks is not None:
        overrides["attacks"] = [] if attacks == "none" else [a.strip() for a in attacks.split(",") if a.strip()]
    cfg = load_config(EvalConfig, config, overrides)
    if attack_steps is not None:
        opts = dict(cfg.attack_options)
        for kind in ("soft", "token"):
            opts[kind] = {**opts.get(kind, {}), "steps": attack_steps}
        cfg = cfg.model_copy(update={"attack_options": opts})
    result = run(cfg, progress=not as_json)
    main = is_main_process()
    finish()
    if not main:
        return
    output.mkdir(parents=True, exist_ok=True)
    report = write_report({_row_name(cfg): result}, output / "report.html", f"erasekit evaluate: {cfg.concept}")
    payload = {**result.to_json(), "config": cfg.model_dump(), "report": str(report)}
    (output / "result.json").write_text(json.dumps(payload, indent=1, default=str))
    if as_json:
        typer.echo(json.dumps(payload, default=str))
    else:
        typer.echo(markdown_table({_row_name(cfg): result}))
        typer.echo(f"report: {report}\nresult: {output / 'result.json'}")


def _row_name(cfg) -> str:
    changed = [str(p) for p in (cfg.text_encoder, cfg.unet, cfg.patch) if p]
    return f"{cfg.model} + {', '.join(changed)}" if changed else cfg.model
