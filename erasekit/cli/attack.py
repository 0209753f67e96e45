"""`erasekit attack`: try to bring an erased concept back with a soft prompt or a real-token attack.

The changed component(s) load over the base model (--text-encoder / --unet / --patch); the originals are loaded
fresh from the base model as the attack's reference (eq. 4). Prompts: the shapes world's held-out target prompts
for the concept, or a text file (one prompt per line) with --prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Model, TextEncoder, Unet
from erasekit.errors import ErasekitError


def _prompts(model: str, concept: str, n: int, prompts_file: Path | None, seed: int) -> tuple[list[str], list[int]]:
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise ErasekitError(f"prompt file {prompts_file} not found: pass a text file with one prompt per line")
        lines = [x.strip() for x in prompts_file.read_text().splitlines() if x.strip()][:n]
        return lines, [seed + i for i in range(len(lines))]
    if model != "shapes":
        raise ErasekitError(
            "give the prompts to attack with --prompts FILE (built-in prompts exist for --model shapes)"
        )
    from erasekit.world.prompt_sets import target_set

    ps = target_set(concept, n, split="heldout", seed=seed)
    return ps.prompts, ps.seeds


@app.command()
def attack(
    concept: Annotated[str, typer.Option("--concept", help="The erased concept to bring back.")],
    kind: Annotated[str, typer.Option("--attack", help="soft | token")] = "soft",
    model: Model = "shapes",
    text_encoder: TextEncoder = None,
    unet: Unet = None,
    patch: Annotated[Path | None, typer.Option("--patch", help="Folder of an ItD patch to attach.")] = None,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="Text file, one prompt per line.")] = None,
    n: Annotated[int, typer.Option("-n", help="Number of prompts to attack.", min=1)] = 50,
    k: Annotated[int | None, typer.Option(help="Number of adversarial tokens.")] = None,
    mode: Annotated[str | None, typer.Option(help="prefix_k | replace_k | add (soft only)")] = None,
    attack_steps: Annotated[int | None, typer.Option("--attack-steps", help="Optimisation steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Attack learning rate / step size.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of AttackConfig options.")] = None,
    sets: Annotated[list[str], typer.Option("--set", help="key=value override, e.g. soft.optimizer=sign.")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option("--seed", help="Prompt-set and attack seed.")] = 0,
    grid: Annotated[Path | None, typer.Option("--grid", help="PNG of before (top) / after (bottom) images.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Attack MODEL (+ erased component) on CONCEPT prompts and report the ASR judged by the concept's detector."""
    import time

    import torch

    from erasekit.artifact import load_original_component
    from erasekit.attacks import AttackConfig, run_attack, success_check
    from erasekit.cli.erase import merge_options, parse_sets
    from erasekit.pipeline import load_pipeline

    if kind not in ("soft", "token"):
        raise ErasekitError(f"unknown attack '{kind}': use soft or token")
    options = parse_sets(sets)
    own = {key: v for key, v in {"k": k, "mode": mode, "steps": attack_steps, "lr": lr}.items() if v is not None}
    options[kind] = {**options.get(kind, {}), **own}
    cfg = merge_options(AttackConfig, config, options, {"seed": seed})
    prompts, seeds = _prompts(model, concept, n, prompts_file, seed)
    pipe = load_pipeline(model, text_encoder=text_encoder, unet=unet)
    original = {}
    if text_encoder is not None or patch is not None:
        original["text_encoder"] = load_original_component(model, "text_encoder")
    if unet is not None:
        original["unet"] = load_original_component(model, "unet")
    if patch is not None:
        try:
            from erasekit.methods.itd import ItdPatch
        except ModuleNotFoundError:
            raise ErasekitError("--patch needs the ItD method (erasekit.methods.itd), which is not installed") from None
        ItdPatch.load(patch).attach(pipe)
    t0 = time.perf_counter()
    from erasekit.eval.classifiers import make_detector

    detector = make_detector(concept, preset=None, model=model)
    outcomes = run_attack(pipe, original, prompts, seeds, kind, cfg, concept, not as_json, detector)
    result = success_check(outcomes, concept, model=model)
    per_prompt = [
        {"prompt": o.prompt, "seed": o.seed, "adversarial_prompt": o.adversarial_prompt, "tokens": o.tokens,
         "loss": round(o.loss, 6), "attacked": o.attacked, "pre": pre, "post": post}
        for o, pre, post in zip(outcomes, result.pop("pre"), result.pop("post"), strict=True)
    ]  # fmt: skip
    summary = {
        "attack": kind, "concept": concept, "model": model, "text_encoder": str(text_encoder) if text_encoder else None,
        "unet": str(unet) if unet else None, "patch": str(patch) if patch else None,
        "seconds": round(time.perf_counter() - t0, 1), "config": cfg.model_dump(), **result, "prompts": per_prompt,
    }  # fmt: skip
    if grid is not None:
        from erasekit.imaging import save_grid

        before = torch.stack([o.image_before for o in outcomes])
        save_grid(torch.cat([before, torch.stack([o.image_after for o in outcomes])]), grid, cols=len(outcomes))

    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"{kind} attack on '{concept}': pre-attack rate {result['pre_attack_rate']:.1%}, "
        f"post-attack rate {result['post_attack_rate']:.1%}, ASR {result['asr']:.1%} over {result['n']} prompts"
    )
    for row in per_prompt[:5]:
        typer.echo(f"  {row['adversarial_prompt']}  (pre {row['pre']}, post {row['post']})")
