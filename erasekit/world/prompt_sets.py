"""Named prompt sets of the shapes world: target, retain and held-out prompts with their seeds and labels.

A concept is one world word (a shape, a colour or a background). Its target set holds prompts that name it;
its retain set holds prompts that name another value of the same attribute (the "other shapes" of the issues).
Held-out templates (never seen in training) are used for evaluation; training templates for method training.
"""

from __future__ import annotations

import torch

from erasekit.errors import ErasekitError
from erasekit.prompts import PromptSet
from erasekit.world.prompts import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, fill
from erasekit.world.render import BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, Scene, sample_scenes

ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": COLOUR_NAMES, "background": BACKGROUND_NAMES}


def concept_attribute(concept: str) -> str:
    """'shape' | 'colour' | 'background' for a world word, or a one-line error listing the valid words."""
    for attr, values in ATTRIBUTES.items():
        if concept in values:
            return attr
    valid = ", ".join(v for vs in ATTRIBUTES.values() for v in vs)
    raise ErasekitError(f"'{concept}' is not a shapes-world concept: use one of {valid}")


def _make(name: str, scenes: list[Scene], templates: tuple[str, ...], seed: int) -> PromptSet:
    prompts = [fill(templates[i % len(templates)], s) for i, s in enumerate(scenes)]
    labels = {
        "shape": [s.shape for s in scenes],
        "colour": [s.colour for s in scenes],
        "background": [s.background for s in scenes],
    }
    return PromptSet(name, prompts, [seed * 100_000 + i for i in range(len(scenes))], labels)


def target_set(concept: str, n: int = 50, split: str = "heldout", seed: int = 0) -> PromptSet:
    """n prompts naming `concept`, other attributes random."""
    attr = concept_attribute(concept)
    idx = ATTRIBUTES[attr].index(concept)
    g = torch.Generator().manual_seed(seed * 7919 + 1)
    scenes = sample_scenes(n, g, **{attr: idx})
    return _make(f"shapes/{split}/target/{concept}", scenes, _templates(split), seed)


def retain_set(concept: str, n: int = 50, split: str = "heldout", seed: int = 0) -> PromptSet:
    """n prompts naming the other values of `concept`'s attribute, spread evenly over them."""
    attr = concept_attribute(concept)
    others = [i for i, v in enumerate(ATTRIBUTES[attr]) if v != concept]
    g = torch.Generator().manual_seed(seed * 7919 + 2)
    scenes = [sample_scenes(1, g, **{attr: others[i % len(others)]})[0] for i in range(n)]
    return _make(f"shapes/{split}/retain/{concept}", scenes, _templates(split), seed + 1)


def world_set(n: int = 200, split: str = "heldout", seed: int = 0) -> PromptSet:
    """n prompts over the whole world (all attributes random): the world check and FID reference set."""
    g = torch.Generator().manual_seed(seed * 7919 + 3)
    return _make(f"shapes/{split}/world", sample_scenes(n, g), _templates(split), seed + 2)


def _templates(split: str) -> tuple[str, ...]:
    if split == "heldout":
        return HELDOUT_TEMPLATES
    if split == "train":
        return TRAIN_TEMPLATES
    raise ErasekitError(f"unknown split '{split}': use 'heldout' or 'train'")
