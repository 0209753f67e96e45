"""Concept inversion (CCE, Pham et al. 2024, "Circumventing Concept Erasure Methods For Text-to-Image Generative
Models"): textual inversion of k new token embeddings on images of the concept, through the ERASED model.

    v* = argmin_v  E_{x0, caption, t, eps} || eps - eps_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t | caption(v)) ||^2

(the plain latent-diffusion loss of Textual Inversion, Gal et al. 2022, eq. 2), where x0 = the VAE latents of the
concept images, caption(v) = a short template ("a photo of a {}") with the k new embeddings v in the "{}", and
eps_theta = the pipeline's text encoder (with anything attached to it by hooks, e.g. an ItD patch) and UNet as
erased. With a v-prediction scheduler the target is v instead of eps. The embeddings are learned ONCE for the
whole prompt set; every attacked prompt then gets them in place of the concept's tokens (replace_k), or in front
of it when it does not name the concept (prefix_k). No early stop applies.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from erasekit.errors import ErasekitError
from erasekit.text import (
    Slots,
    concept_tokens,
    contains_concept,
    encode_injected,
    random_token_embeddings,
    template_slots,
    token_embedding,
)


class InversionConfig(BaseModel):
    """Concept inversion options (defaults: CCE's single token, Textual Inversion's lr 5e-3, 300 Adam steps)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(1, ge=1)  # new token embeddings learned
    init: str | None = None  # a word whose token embedding (mean over its tokens) starts every slot; None: random
    steps: int = Field(300, ge=1)
    lr: float = Field(5e-3, gt=0)
    batch_size: int = Field(4, ge=1)  # (image, caption, t, noise) draws per step
    templates: list[str] = ["a {}", "a photo of a {}", "an image of a {}"]


def concept_latents(pipe: StableDiffusionPipeline, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """VAE latents x0 (N, C, h, w) of images (N, 3, H, W) in [0, 1]: the posterior mean times the scaling factor."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
        raise ErasekitError(
            f"concept images must be (N, 3, {size}, {size}) in [0, 1] for this pipeline, got {tuple(images.shape)}"
        )
    if images.min() < 0 or images.max() > 1:
        raise ErasekitError("concept images must be in [0, 1]: rescale them (e.g. (x + 1) / 2 for [-1, 1] images)")
    vae = pipe.vae
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(vae.device, vae.dtype) * 2 - 1
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out).float()


def diffusion_loss(
    pipe: StableDiffusionPipeline,
    slots: Slots,
    emb: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Textual Inversion's loss per row (B,): captions `slots` with emb (k, D) injected, latents x0 / noise (B, C, h, w)
    at DDPM timesteps t (B,); differentiable in emb."""
    scheduler, unet = pipe.scheduler, pipe.unet
    x0, noise, t = x0.to(unet.device), noise.to(unet.device), t.to(unet.device)
    x_t = scheduler.add_noise(x0, noise, t)
    prediction = scheduler.config.prediction_type
    if prediction == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    else:
        target = x0 if prediction == "sample" else noise
    ctx = encode_injected(pipe.text_encoder, slots, emb)
    out = unet(x_t.to(unet.dtype), t, encoder_hidden_states=ctx.to(unet.dtype)).sample.float()
    return ((out - target) ** 2).flatten(1).mean(1)


def initial_embeddings(
    pipe: StableDiffusionPipeline, config: InversionConfig, generator: torch.Generator
) -> torch.Tensor:
    """(k, D): the init word's token embedding (mean over its tokens) in every slot, else random real tokens'."""
    if config.init is None:
        return random_token_embeddings(pipe.text_encoder, (config.k,), generator).float()
    table = token_embedding(pipe.text_encoder).weight.detach()
    word = table[torch.tensor(concept_tokens(pipe.tokenizer, config.init), device=table.device)].float().mean(0)
    return word.expand(config.k, -1).clone()


def learn(
    pipe: StableDiffusionPipeline,
    x0: torch.Tensor,
    config: InversionConfig,
    seed: int,
    bar: Progress | None = None,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(learned embeddings (k, D) float32 on CPU, training loss per step (steps,)) from concept latents x0 (N, C, h, w).

    Each step draws `batch_size` (image, caption template, t ~ U[0, T), eps) with a generator seeded by `seed`;
    Adam updates the embeddings only (the model's own .grad is left alone). `bar`: a live progress display to add
    a task to. `start` (k, D): embeddings to continue from instead of `config.init` (an adversarial-training inner
    attack warm-started at its previous solution).
    """
    g = torch.Generator().manual_seed(seed)
    captions = template_slots(pipe.tokenizer, config.templates, config.k)
    first = initial_embeddings(pipe, config, g) if start is None else start.float()
    emb = first.to(pipe.device).clone().requires_grad_(True)
    adam = torch.optim.Adam([emb], lr=config.lr)
    n_train = pipe.scheduler.config.num_train_timesteps
    losses = torch.zeros(config.steps)
    task = bar.add_task("concept inversion", total=config.steps) if bar is not None else None
    for step in range(config.steps):
        b = config.batch_size
        img = torch.randint(len(x0), (b,), generator=g)
        cap = torch.randint(len(config.templates), (b,), generator=g)
        t = torch.randint(n_train, (b,), generator=g)
        noise = torch.randn(b, *x0.shape[1:], generator=g)
        slots = Slots(captions.ids[cap], captions.positions[cap], captions.mode)
        loss = diffusion_loss(pipe, slots, emb, x0[img], t, noise).mean()
        (emb.grad,) = torch.autograd.grad(loss, emb)
        adam.step()
        losses[step] = loss.item()
        if task is not None:
            bar.update(task, advance=1)
    return emb.detach().cpu(), losses


def placement(tokenizer, prompt: str, concept: str | None) -> str:
    """Where the learned tokens go in an attacked prompt: in place of the concept, else in front of the prompt."""
    return "replace_k" if concept and contains_concept(tokenizer, prompt, concept) else "prefix_k"
