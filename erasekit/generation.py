"""Batched, seeded image generation through a diffusers Stable Diffusion pipeline.

One seed per image: image i is the same whatever batch it falls in, so grids of "original vs erased" line up.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from rich.progress import Progress

from erasekit.text import check_prompts


@torch.no_grad()
def generate(
    pipe: StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int = 25,
    guidance: float = 5.0,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for prompts[i] with seeds[i]."""
    check_prompts(pipe.tokenizer, prompts)
    if len(seeds) != len(prompts):
        raise ValueError("one seed per prompt")
    out = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("generating", total=len(prompts))
        for i in range(0, len(prompts), batch_size):
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[i : i + batch_size]]
            images = pipe(
                prompts[i : i + batch_size], num_inference_steps=steps, guidance_scale=guidance,
                generator=gens, output_type="pt",
            ).images  # fmt: skip
            out.append(images.float().cpu())
            bar.update(task, advance=len(gens))
    return torch.cat(out)
