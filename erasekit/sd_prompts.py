"""Shipped prompt sets for Stable Diffusion (erasekit/data/sd/): templated concept prompts with seeds, ~100
everyday captions for FID / CLIP score when no COCO file is given, and the AdvUnlearn paper's objects.

    templated_prompts(concept, kind, n, seed) -> (prompts, seeds), n each; the same arguments give the same lists
    coco_like_prompts()                       -> 100 captions written for erasekit (not taken from COCO)
    advunlearn_objects()                      -> ["church", "garbage truck", "parachute", "tench"]
"""

from __future__ import annotations

import random
from importlib import resources

import yaml

from erasekit.errors import ErasekitError

SEED_RANGE = 2**31  # image seeds stay within a signed 32-bit int, as torch.Generator.manual_seed and most CLIs take


def data_text(name: str) -> str:
    """The text of a shipped file under erasekit/data/sd/ (`name` may hold a subfolder, e.g. "zero_shot/x.txt")."""
    path = resources.files("erasekit.data").joinpath("sd")
    for part in name.split("/"):  # one part per call: Python 3.11's namespace-package paths take one
        path = path.joinpath(part)
    return path.read_text(encoding="utf-8")


def data_lines(name: str) -> list[str]:
    """Non-empty lines of a shipped text file, without '#' comment lines."""
    return [s for line in data_text(name).splitlines() if (s := line.strip()) and not s.startswith("#")]


def templates() -> dict[str, list[str]]:
    """The shipped templates per concept kind ("object", "style", "person"); "{}" stands for the concept."""
    return yaml.safe_load(data_text("templates.yaml"))


def templated_prompts(concept: str, kind: str, n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """n prompts naming `concept` from the `kind` templates, and one image seed per prompt.

    The templates are shuffled with `seed` and cycled, so any n >= the number of templates uses every template;
    the image seeds are drawn from the same generator, so (concept, kind, n, seed) fixes both lists.
    """
    table = templates()
    if kind not in table:
        raise ErasekitError(f"unknown prompt kind '{kind}': use one of {', '.join(table)}")
    if not concept.strip():
        raise ErasekitError("the concept is empty: pass a word such as --concept church")
    if n < 1:
        raise ErasekitError(f"the number of prompts must be at least 1, got {n}")
    rng = random.Random(seed)
    order = rng.sample(table[kind], len(table[kind]))
    prompts = [order[i % len(order)].format(concept.strip()) for i in range(n)]
    return prompts, [rng.randrange(SEED_RANGE) for _ in range(n)]


def coco_like_prompts() -> list[str]:
    """~100 diverse everyday captions (people, animals, vehicles, food, rooms, landscapes)."""
    return data_lines("coco_like.txt")


def advunlearn_objects() -> list[str]:
    """The objects erased in the AdvUnlearn paper (Imagenette classes)."""
    return data_lines("advunlearn_objects.txt")
