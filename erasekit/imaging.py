"""Image tensors <-> PIL images and grids."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) in [0, 1] -> N RGB images."""
    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def grid(images: torch.Tensor, cols: int | None = None, scale: int = 1) -> Image.Image:
    """(N, 3, H, W) in [0, 1] -> one image with `cols` columns (default about square), upscaled by `scale`."""
    n, _, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(to_pil(images)):
        canvas.paste(im, ((i % cols) * w, (i // cols) * h))
    return canvas.resize((cols * w * scale, rows * h * scale), Image.NEAREST) if scale > 1 else canvas


def save_grid(images: torch.Tensor, path: str | Path, cols: int | None = None) -> Path:
    """Write a grid PNG (small images are upscaled to at least 64 px per tile); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(images, cols, scale=max(1, 64 // images.shape[-1])).save(path)
    return path
