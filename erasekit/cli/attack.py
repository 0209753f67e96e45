"""`erasekit attack`: try to bring an erased concept back (soft prompt, real tokens, concept inversion,
Ring-A-Bell), judged by the domain's detector.

The erased parts load over the base model (`--artifact DIR`, or `--text-encoder` / `--unet` / `--patch`); the
unmodified model is loaded beside it as the attacks' reference (eq. 4). Prompts: the domain's held-out target
prompts for the concept, or a prompt file (.txt one a line, .csv I2P columns) with --prompts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from erasekit.attacks import ATTACKS, AttackConfig, judge, run_attack, save_outcomes
from erasekit.cli import app
from erasekit.cli import options as opt
from erasekit.config import given, load_recipe, parse_sets, read_yaml, resolve
from erasekit.domains import domain_for
from erasekit.errors import ErasekitError
from erasekit.imaging import save_grid
from erasekit.methods import erased_parts, load_erased
from erasekit.pipeline import load_pipeline, resolve_device


def attack_options(domain_name: str, yaml_path: Path | None, sets: dict, flags: dict) -> AttackConfig:
    """AttackConfig: the domain's evaluation recipe (sampler, batch) < --config < --set < flags."""
    recipe = load_recipe(f"{domain_name}/evaluate")
    base = {**recipe.get("attack_options", {}), "sample_steps": recipe["sample_steps"], "guidance": recipe["guidance"]}
    return resolve(AttackConfig, base, read_yaml(yaml_path) if yaml_path else {}, sets, given(flags))


@app.command()
def attack(
    concept: Annotated[str, typer.Option("--concept", help="The erased concept to bring back.")],
    kind: Annotated[str, typer.Option("--attack", help=f"{' | '.join(ATTACKS)} | all")] = "soft",
    model: opt.Model = "shapes",
    artifact: opt.Artifact = None,
    text_encoder: opt.TextEncoder = None,
    unet: opt.Unet = None,
    patch: opt.Patch = None,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="Prompt file (.txt or I2P .csv).")] = None,
    n: Annotated[int, typer.Option("-n", help="Number of prompts to attack.", min=1)] = 50,
    detector_model: Annotated[str | None, typer.Option("--detector-model", help="Detector folder or hub id.")] = None,
    seed: opt.Seed = None,
    sample_steps: opt.SampleSteps = None,
    guidance: opt.Guidance = None,
    config: opt.Config = None,
    sets: opt.Sets = [],  # noqa: B006
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    grid: Annotated[Path | None, typer.Option("--grid", help="PNG of before (top) / after (bottom) images.")] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Folder to keep the attack for replay.")] = None,
    as_json: opt.Json = False,
) -> None:
    """Attack MODEL (+ erased parts) on CONCEPT prompts and report the ASR judged by the concept's detector."""
    kinds = list(ATTACKS) if kind == "all" else [kind]
    if kinds[0] not in ATTACKS:
        raise ErasekitError(f"unknown attack '{kind}': use one of {', '.join(ATTACKS)} or all")
    domain = domain_for(model)
    flags = {"seed": seed, "sample_steps": sample_steps, "guidance": guidance}
    cfg = attack_options(domain.name, config, parse_sets(sets), flags)
    parts = erased_parts(artifact, text_encoder, unet, patch)
    dev = resolve_device(device)
    pipe = load_erased(model, parts, device=dev, dtype=dtype)
    original = load_pipeline(model, device=dev, dtype=dtype) if parts else None
    prompts = str(prompts_file) if prompts_file else None
    plan = domain.attack_plan(concept, n, cfg.seed, prompts, original or pipe, detector_model)
    target = plan.sets["target"]
    images = plan.concept_images() if "inversion" in kinds else None
    results = {}
    for k in kinds:
        t0 = time.perf_counter()
        outcomes = run_attack(
            pipe, original, target.prompts, target.seeds, k, cfg, concept, not as_json, plan.detector,
            vocabulary=plan.vocabulary, concept_images=images,
        )  # fmt: skip
        result = judge(outcomes, plan.detector)
        pre, post = result.pop("pre"), result.pop("post")
        result["prompts"] = [
            {"prompt": o.prompt, "seed": o.seed, "adversarial_prompt": o.adversarial_prompt, "tokens": o.tokens,
             "loss": round(o.loss, 6), "attacked": o.attacked, "pre": a, "post": b}
            for o, a, b in zip(outcomes, pre, post, strict=True)
        ]  # fmt: skip
        result["seconds"] = round(time.perf_counter() - t0, 1)
        results[k] = result
        if save is not None:
            save_outcomes(outcomes, save / k)
        if grid is not None:
            before = torch.stack([o.image_before for o in outcomes])
            after = torch.stack([o.image_after for o in outcomes])
            path = grid if len(kinds) == 1 else grid.with_name(f"{grid.stem}-{k}{grid.suffix}")
            save_grid(torch.cat([before, after]), path, cols=len(outcomes))
    worst = max(results, key=lambda k: results[k]["asr"])
    summary = {
        "concept": concept, "model": model, "parts": parts, "prompt_set": target.name, "n": len(target),
        "config": cfg.model_dump(), "attacks": results,
        "worst_case": {"attack": worst, "asr": results[worst]["asr"], "one_prompt_points": 100 / len(target)},
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    for k, r in results.items():
        typer.echo(
            f"{k} attack on '{concept}': pre-attack rate {r['pre_attack_rate']:.1%}, ASR {r['asr']:.1%} "
            f"over {r['n']} prompts ({r['seconds']} s)"
        )
    if len(results) > 1:
        typer.echo(
            f"worst case: {worst}, ASR {results[worst]['asr']:.1%} (one prompt = {100 / len(target):.1f} points)"
        )
