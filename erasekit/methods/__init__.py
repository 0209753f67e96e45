"""Erasure methods. Each module exposes a pydantic `<Name>Config` (with `concepts`) and
`erase(pipe, config, output) -> dict`, which trains, writes the artifact and checkpoints into `output`, and
resumes from a checkpoint found there.

    esd         ESD (UNet or text encoder), eq. 2-3
    advunlearn  AdvUnlearn: inner soft-prompt attack + ESD + retain term, eq. 5-7
    itd         ItD (another module)
"""

from __future__ import annotations

import re
from importlib import resources

from pydantic import BaseModel


def shapes_retain_prompts(concepts: list[str], n: int = 120) -> list[str]:
    """Retain prompts of the shapes world: other values of each concept's attribute, plus other attributes."""
    from erasekit.world.prompt_sets import retain_set, world_set

    out = [p for c in concepts for p in retain_set(c, n // 2, split="train", seed=11).prompts]
    words = set(concepts)
    out += [p for p in world_set(n, split="train", seed=12).prompts if not words & set(re.findall(r"[a-z]+", p))]
    return out


def sd_retain_prompts() -> list[str]:
    """The shipped retain set for Stable Diffusion: everyday objects, no body or clothing words."""
    text = resources.files("erasekit.data").joinpath("sd_retain.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


SHAPES_CONCEPT_TEMPLATES = ("{}", "a {}", "a picture of a {}", "an image of a {}", "a simple drawing of a {}")


def shapes_concept_prompts(concepts: list[str], anchored: bool = False, n: int = 40) -> list[str]:
    """Training prompts for the shapes world: the concept word in short templates, no other attribute.

    Prompts that also name a colour or background make ESD erase those words too when eq. 2's reference is the
    empty prompt (measured: colour accuracy 0.94 -> 0.46 with full world prompts, 0.76 with these). With an
    anchor (`anchored`), the reference keeps those words, so n world prompts per concept (training templates,
    colour and background named) join the short ones.
    """
    out = [t.format(c) for c in concepts for t in SHAPES_CONCEPT_TEMPLATES]
    if anchored:
        from erasekit.world.prompt_sets import target_set

        out += [p for c in concepts for p in target_set(c, n, split="train", seed=13).prompts]
    return out


def _merge(defaults: dict, given: dict) -> dict:
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def with_defaults(config: BaseModel, defaults: dict) -> BaseModel:
    """`config` with `defaults` for the options nobody set (nested options key by key); set options win. A
    callable default is called with `config`, and only for an unset option."""
    if not defaults:
        return config
    given = config.model_dump(exclude_unset=True)
    defaults = {k: v(config) if callable(v) else v for k, v in defaults.items() if not (callable(v) and k in given)}
    return type(config).model_validate(_merge(defaults, given))


def default_prompts(config: BaseModel, model: str) -> BaseModel:
    """Fill a method config's empty prompt lists for `model`; shapes-world concepts are checked here too.

    For the shapes world a config class's `SHAPES_DEFAULTS` (a ClassVar dict) replaces the SD defaults of the
    options the user left unset (the ESD and AdvUnlearn shapes recipes; a value may be a function of the config,
    as AdvUnlearn's anchor: the concept's nearest value, `erasekit.world.anchor`).

    `prompts`: for the shapes world, `shapes_concept_prompts` (with world prompts when an anchor is set;
    elsewhere: the concept words themselves).
    `retain_prompts` (only when the retain term is on, gamma > 0): the shapes world's retain prompts, or the
    shipped SD retain set.
    """
    from erasekit.pipeline import SHAPES

    update: dict = {}
    if model == SHAPES:
        from erasekit.world.prompt_sets import concept_attribute

        for c in config.concepts:
            concept_attribute(c)
        config = with_defaults(config, getattr(type(config), "SHAPES_DEFAULTS", {}))
        if "prompts" in type(config).model_fields and not config.prompts:
            update["prompts"] = shapes_concept_prompts(config.concepts, getattr(config, "anchor", None) is not None)
    if getattr(config, "gamma", 0) > 0 and not config.retain_prompts:
        update["retain_prompts"] = shapes_retain_prompts(config.concepts) if model == SHAPES else sd_retain_prompts()
    return config.model_copy(update=update) if update else config
