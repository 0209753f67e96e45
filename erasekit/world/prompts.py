"""Prompt templates of the shapes world, with paraphrases; some templates are held out for evaluation.

A prompt may leave the colour or the background unsaid; the scene then draws that attribute at random, so
"a circle" is a fair concept prompt for every colour and background.
"""

from __future__ import annotations

import torch

from erasekit.world.render import BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, Scene

# Templates with all three attributes (held-out templates reuse training words in new orders): {c} colour, {s} shape, {b} background.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {c} {s} on a {b} background",
    "{c} {s} on {b}",
    "a picture of a {c} {s} on a {b} background",
    "an image of a {c} {s} over a {b} backdrop",
    "a simple drawing of a {c} {s}, {b} background",
    "one {c} {s} in front of a plain {b} background",
    "there is one {c} {s} shown over {b}",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a simple {c} {s} shown on a {b} background",
    "there is a {c} {s} on a plain {b} backdrop",
)
# Partial templates used in training, so the model learns what an unsaid attribute means.
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "a {s}",
    "a {c} {s}",
    "a {s} on a {b} background",
    "a picture of a {s}",
    "an image of a {c} {s}",
)
FILLER_WORDS: tuple[str, ...] = (
    "a", "an", "of", "on", "in", "over", "front", "picture", "image", "drawing", "background", "backdrop",
    "one", "simple", "shown", "there", "is", "plain",
)  # fmt: skip
WORLD_WORDS: tuple[str, ...] = (*SHAPES, *COLOUR_NAMES, *BACKGROUND_NAMES, *FILLER_WORDS)


def fill(template: str, scene: Scene) -> str:
    """The prompt that `template` gives for `scene`."""
    return template.format(c=COLOUR_NAMES[scene.colour], s=SHAPES[scene.shape], b=BACKGROUND_NAMES[scene.background])


def training_prompt(scene: Scene, generator: torch.Generator, p_partial: float = 0.3) -> str:
    """A random training caption for `scene`: a full template, or with probability p_partial a partial one."""
    u = torch.rand(2, generator=generator).tolist()
    pool = PARTIAL_TEMPLATES if u[0] < p_partial else TRAIN_TEMPLATES
    return fill(pool[int(u[1] * len(pool))], scene)
