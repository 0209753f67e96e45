"""Domains: what a kind of model brings to the methods, attacks and evaluation, handed in as arguments.

A domain answers, for a model and a concept: the method recipe and its prompts (training and retain prompts,
ItD's inputs), the evaluation plan (target / retain / world prompt sets with seeds, the concept detector with its
protocol card, the FID reference, CLIP), the attacks' vocabulary and images of the concept. Two domains:

    shapes   the bundled shapes world (`erasekit.world`), or a folder holding a copy of its bundle
    sd       Stable Diffusion v1.x: a diffusers folder or a hub id

The domain is chosen once, from the model spec (`domain_for`), never from the concept. Layers below
(methods, attacks, eval) import nothing from here or from `erasekit.world`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from erasekit.config import config_hash, given, load_recipe, read_yaml, resolve
from erasekit.domains.base import Domain, is_shapes
from erasekit.domains.sd import SdDomain
from erasekit.domains.shapes import ShapesDomain
from erasekit.eval.distributed import process_device
from erasekit.eval.harness import EvalConfig, EvalResult, evaluate
from erasekit.methods import erased_parts, load_erased, load_method, parts_card
from erasekit.pipeline import load_pipeline, resolve_device, resolve_dtype


def domain_for(spec: str) -> Domain:
    """The domain of a model spec: the shapes world for "shapes" or a folder inside a world bundle, else SD."""
    return ShapesDomain(spec) if is_shapes(spec) else SdDomain(spec)


def method_config(
    domain: Domain,
    method: str,
    concepts: list[str],
    recipe: str | None = None,
    yaml_path: str | Path | None = None,
    sets: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
) -> tuple[BaseModel, str]:
    """(resolved config, recipe name): recipe < YAML --config < --set < flags, then the domain's prompts."""
    _, cls = load_method(method)
    domain.check_concepts(concepts)
    name = recipe or domain.recipe_name(method, concepts)
    base = domain.recipe_options(load_recipe(name), concepts)
    layers = [base, read_yaml(yaml_path) if yaml_path else {}, sets or {}, {**given(flags or {}), "concepts": concepts}]
    return domain.fill(method, resolve(cls, *layers)), name


def run_method(
    domain: Domain,
    method: str,
    config: BaseModel,
    output: str | Path,
    device: str | None = None,
    dtype: str | None = None,
    text_encoder: str | None = None,
    unet: str | None = None,
    progress: bool = True,
) -> dict:
    """Load the model, run `method` with `config` into `output` and return its summary (recipe hash included)."""
    module, _ = load_method(method)
    kwargs = domain.method_inputs(method, config)  # missing prompt files fail here, before the model loads
    dev = resolve_device(device)
    pipe = load_pipeline(domain.spec, text_encoder=text_encoder, unet=unet, device=dev)
    if method != "itd":
        kwargs["dtype"] = resolve_dtype(dtype, dev)
    Path(output).mkdir(parents=True, exist_ok=True)
    summary = module.erase(pipe, config, Path(output), progress=progress, **kwargs)
    base = {k: v for k, v in (("text_encoder", text_encoder), ("unet", unet)) if v}  # trained on these parts
    return {
        **summary,
        "model": domain.spec,
        **({"base_parts": base} if base else {}),
        "config_sha256": config_hash(config),
    }


def eval_config(spec: str, yaml_path: str | Path | None = None, flags: dict[str, Any] | None = None) -> EvalConfig:
    """EvalConfig from the domain's evaluation recipe < YAML --config < `flags` (only the options given)."""
    data = read_yaml(yaml_path) if yaml_path else {}
    model = (flags or {}).get("model") or data.get("model") or spec
    domain = domain_for(model)
    return resolve(EvalConfig, load_recipe(f"{domain.name}/evaluate"), data, flags or {})


def run_evaluation(
    cfg: EvalConfig, parts: dict[str, str], progress: bool = False, baseline: EvalResult | None = None
) -> EvalResult:
    """Load `cfg.model` with the erased `parts` (`erasekit.methods.erased_parts`), build the domain's plan and
    evaluate; the unmodified model is loaded beside it when anything was changed."""
    domain = domain_for(cfg.model)
    device = resolve_device(cfg.device) if cfg.device else process_device()
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_erased(cfg.model, parts, device=device, dtype=dtype)
    original = load_pipeline(cfg.model, device=device, dtype=dtype) if parts else None
    plan = domain.eval_plan(cfg, original or pipe, device)
    card = {"spec": cfg.model, "domain": domain.name, "parts": parts_card(parts)}
    return evaluate(cfg, pipe, original, plan, card, progress, baseline)


__all__ = [
    "Domain",
    "domain_for",
    "erased_parts",
    "eval_config",
    "method_config",
    "run_evaluation",
    "run_method",
]
