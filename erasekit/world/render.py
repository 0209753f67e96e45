"""Procedural renderer of the shapes world: one coloured shape on a plain background, 32x32 RGB.

Shapes are drawn as anti-aliased masks (4x supersampling), vectorised over a batch in torch, so a batch of
256 scenes renders in a few milliseconds on CPU. Images are float tensors in [-1, 1] with shape (B, 3, H, W),
the range the VAE and the diffusers pipelines use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.10, 0.66, 0.20),
    "blue": (0.14, 0.30, 0.90),
    "yellow": (0.96, 0.84, 0.10),
    "purple": (0.58, 0.18, 0.74),
    "orange": (0.98, 0.52, 0.05),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (0.97, 0.97, 0.97),
    "black": (0.05, 0.05, 0.05),
    "gray": (0.55, 0.55, 0.55),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

IMAGE_SIZE = 32
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """Indices into SHAPES / COLOUR_NAMES / BACKGROUND_NAMES, centre and radius in units of the image side."""

    shape: int
    colour: int
    background: int
    cx: float
    cy: float
    radius: float


def sample_scenes(
    n: int,
    generator: torch.Generator,
    shape: int | None = None,
    colour: int | None = None,
    background: int | None = None,
) -> list[Scene]:
    """Draw n random scenes; fixed attributes are passed as indices, the rest are uniform."""
    out = []
    for _ in range(n):
        r = torch.rand(6, generator=generator).tolist()
        radius = 0.24 + 0.12 * r[3]
        margin = radius + 0.04
        out.append(
            Scene(
                shape=shape if shape is not None else int(r[0] * len(SHAPES)),
                colour=colour if colour is not None else int(r[1] * len(COLOURS)),
                background=background if background is not None else int(r[2] * len(BACKGROUNDS)),
                cx=margin + (1 - 2 * margin) * r[4],
                cy=margin + (1 - 2 * margin) * r[5],
                radius=radius,
            )
        )
    return out


def _masks(shape_ids: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, rad: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean masks (B, S, S) of the shapes on a supersampled grid of side S."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    dx = (x[None] - cx[:, None, None]) / rad[:, None, None]  # (B, S, S), in units of the radius
    dy = (y[None] - cy[:, None, None]) / rad[:, None, None]
    dist = torch.sqrt(dx**2 + dy**2)
    theta = torch.atan2(dx, -dy)  # 0 points up
    circle = dist <= 1.0
    square = torch.maximum(dx.abs(), dy.abs()) <= 0.82
    # Upward triangle: apex at (0, -1), base at y = 0.6, half-width at the base 1.0.
    tri_edge = (dy + 1.0) / 1.6  # 0 at the apex, 1 at the base
    triangle = (dy <= 0.6) & (dy >= -1.0) & (dx.abs() <= tri_edge * 1.0)
    arm = 0.32
    cross = ((dx.abs() <= arm) & (dy.abs() <= 1.0)) | ((dy.abs() <= arm) & (dx.abs() <= 1.0))
    # Five-pointed star: boundary radius oscillates between 0.45 (inner) and 1.0 (tips) with angle.
    # The phase is shifted so that one tip points up.
    phase_up = torch.remainder(theta + math.pi / 5, 2 * math.pi / 5) / (2 * math.pi / 5)
    star = dist <= 0.42 + 0.58 * (1 - 2 * (phase_up - 0.5).abs()) ** 1.6
    stack = torch.stack([circle, square, triangle, cross, star], dim=1)  # (B, 5, S, S)
    return stack[torch.arange(len(shape_ids)), shape_ids]


def render(scenes: list[Scene], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Render scenes to images of shape (B, 3, size, size) in [-1, 1]."""
    shape_ids = torch.tensor([s.shape for s in scenes])
    cx = torch.tensor([s.cx for s in scenes])
    cy = torch.tensor([s.cy for s in scenes])
    rad = torch.tensor([s.radius for s in scenes])
    big = _masks(shape_ids, cx, cy, rad, size * _SUPERSAMPLE).float()
    cover = torch.nn.functional.avg_pool2d(big[:, None], _SUPERSAMPLE)  # (B, 1, size, size) in [0, 1]
    fg = torch.tensor([COLOURS[COLOUR_NAMES[s.colour]] for s in scenes])[:, :, None, None]
    bg = torch.tensor([BACKGROUNDS[BACKGROUND_NAMES[s.background]] for s in scenes])[:, :, None, None]
    img = cover * fg + (1 - cover) * bg
    return img * 2 - 1
