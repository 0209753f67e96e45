"""How every attack draws its images: DDIM (eta 0) built from the pipeline's own scheduler config, one seed per image.

The attacks optimise against the original model's DDIM trajectory (erasekit.diffusion.TrajectoryBank), so the
before / after images and the early-stop checks are drawn with the same sampler: `ddim_sampling` swaps a
DDIMScheduler made from the pipeline scheduler's config (same betas and spacing; SD v1.4 ships PNDM) in for the
duration of an attack and puts the original back afterwards. Image i starts from the noise of seeds[i], as in
`erasekit.generate`, whatever batch it falls in.

Images are (N, 3, H, W) in [0, 1]; text contexts (N, L, D).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from erasekit.diffusion import as_ddim
from erasekit.generation import generate
from erasekit.text import Slots, build_slots, encode_injected


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of an attack's images: DDIM steps, CFG guidance, images per pipeline call."""

    steps: int
    guidance: float
    batch_size: int


@contextmanager
def ddim_sampling(pipe: StableDiffusionPipeline) -> Iterator[str]:
    """Within the block `pipe.scheduler` is DDIM (eta 0, the pipeline's default) with the pipeline's config; yields
    the class name of the scheduler it replaced."""
    own = pipe.scheduler
    pipe.scheduler = as_ddim(own)
    try:
        yield type(own).__name__
    finally:
        pipe.scheduler = own


def sampler_card(pipe: StableDiffusionPipeline, sampling: Sampling, replaced: str) -> dict:
    """What drew the images: the scheduler class actually used (call inside `ddim_sampling`), steps, eta, guidance."""
    return {
        "scheduler": type(pipe.scheduler).__name__,
        "steps": sampling.steps,
        "eta": 0.0,
        "guidance": sampling.guidance,
        "prediction_type": pipe.scheduler.config.prediction_type,
        "pipeline_scheduler": replaced,  # the pipeline's own scheduler, set aside during the attack
    }


def draw_prompts(
    pipe: StableDiffusionPipeline, prompts: list[str], seeds: list[int], sampling: Sampling
) -> torch.Tensor:
    """Images (N, 3, H, W) of readable prompts."""
    return generate(
        pipe, prompts, seeds, steps=sampling.steps, guidance=sampling.guidance, batch_size=sampling.batch_size
    )


@torch.no_grad()
def draw_context(
    pipe: StableDiffusionPipeline, ctx: torch.Tensor, seeds: list[int], sampling: Sampling
) -> torch.Tensor:
    """Images (N, 3, H, W) from text contexts ctx (N, L, D) (the unconditional branch encodes "" as usual)."""
    out = []
    for i in range(0, len(seeds), sampling.batch_size):
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[i : i + sampling.batch_size]]
        images = pipe(
            prompt_embeds=ctx[i : i + sampling.batch_size], num_inference_steps=sampling.steps,
            guidance_scale=sampling.guidance, generator=gens, output_type="pt",
        ).images  # fmt: skip
        out.append(images.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def draw_injected(
    pipe: StableDiffusionPipeline, slots: Slots, emb: torch.Tensor, seeds: list[int], sampling: Sampling
) -> torch.Tensor:
    """Images (N, 3, H, W) of slots.ids with embeddings emb (k, D) or (N, k, D) injected in pipe's text encoder."""
    ctx = encode_injected(pipe.text_encoder, slots, emb.to(pipe.device))
    return draw_context(pipe, ctx, seeds, sampling)


def draw_embedded(
    pipe: StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    embeddings: list[torch.Tensor | None],
    modes: list[str | None],
    concept: str | None,
    sampling: Sampling,
) -> torch.Tensor:
    """Images (N, 3, H, W) of prompts[i] with embeddings[i] (k_i, D) injected in mode modes[i]; a prompt whose
    embedding is None is drawn as it is. Prompts sharing a mode and k are drawn together."""
    out: list[torch.Tensor | None] = [None] * len(prompts)
    groups: dict[tuple, list[int]] = {}
    for i, (e, m) in enumerate(zip(embeddings, modes, strict=True)):
        groups.setdefault((m, e.shape[0]) if e is not None else None, []).append(i)
    for key, idx in groups.items():
        ps, ss = [prompts[i] for i in idx], [seeds[i] for i in idx]
        if key is None:
            images = draw_prompts(pipe, ps, ss, sampling)
        else:
            slots = build_slots(pipe.tokenizer, ps, key[0], key[1], concept)
            images = draw_injected(pipe, slots, torch.stack([embeddings[i] for i in idx]), ss, sampling)
        for i, img in zip(idx, images, strict=True):
            out[i] = img
    return torch.stack(out)
