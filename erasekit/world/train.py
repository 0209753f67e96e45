"""Training of the shapes world: VAE -> attribute classifier -> world CLIP -> UNet + text encoder.

Each stage checkpoints into `<work>/<stage>/` every `checkpoint_every` steps and resumes from there; the data
of step i is drawn from a generator seeded by (seed, stage, i), so a resumed run sees exactly the data an
uninterrupted one would, and ends with the same weights. `export_bundle` writes fp16 safetensors in
diffusers layout (the bundle that `load_pipeline("shapes")` reads).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from erasekit.checkpoint import load_checkpoint, save_checkpoint
from erasekit.world import components
from erasekit.world.evaluators import HEADS, ShapeClassifier, make_world_clip
from erasekit.world.prompts import training_prompt
from erasekit.world.render import render, sample_scenes
from erasekit.world.tokenizer import build_tokenizer

STAGES = ("vae", "classifier", "clip", "unet")


class WorldTrainConfig(BaseModel):
    """Recipe of the bundled world (figures in WORLD-NOTES.md)."""

    seed: int = 0
    checkpoint_every: int = 250
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_lr: float = 2e-3
    classifier_steps: int = 800
    classifier_batch: int = 128
    clip_steps: int = 600
    clip_batch: int = 64
    unet_steps: int = 2500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    unet_width: int = 32
    ema_decay: float = 0.995
    p_uncond: float = 0.1


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    """The generator of one step's data: a function of (seed, stage, step) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + STAGES.index(stage) * 100_003 + step)


def world_batch(n: int, g: torch.Generator, p_partial: float = 0.3) -> tuple[torch.Tensor, list[str], dict]:
    """(images (n, 3, 32, 32) in [-1, 1], captions, attribute labels {"shape": (n,), ...})."""
    scenes = sample_scenes(n, g)
    prompts = [training_prompt(s, g, p_partial) for s in scenes]
    labels = {
        "shape": torch.tensor([s.shape for s in scenes]),
        "colour": torch.tensor([s.colour for s in scenes]),
        "background": torch.tensor([s.background for s in scenes]),
    }
    return render(scenes), prompts, labels


def cosine_lr(step: int, total: int, warmup: int = 100, floor: float = 0.1) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def _run_stage(
    name: str,
    work: Path,
    cfg: WorldTrainConfig,
    steps: int,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    step_fn: Callable[[int, torch.Generator], torch.Tensor],
    after_step: Callable[[], None] | None = None,
) -> None:
    """The shared loop: resume, then lr schedule, loss, backward, step, checkpoint, progress bar."""
    folder = work / name
    if (folder / "done").exists():
        load_checkpoint(folder, modules, None)
        return
    resumed = load_checkpoint(folder, modules, optimizer)
    start = resumed[0] if resumed else 0
    cols = (
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*cols) as bar:
        task = bar.add_task(name, total=steps, completed=start, loss="")
        for step in range(start, steps):
            for group in optimizer.param_groups:
                group["lr"] = base_lr * cosine_lr(step, steps)
            loss = step_fn(step, step_generator(cfg.seed, name, step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            bar.update(task, advance=1, loss=f"loss {loss.item():.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps:
                save_checkpoint(folder, modules, optimizer, step + 1)
    (folder / "done").touch()


def train_world(work: str | Path, cfg: WorldTrainConfig, stages: tuple[str, ...] = STAGES) -> dict:
    """Train the world's models into `work` (resumable); returns the trained modules."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(cfg.model_dump_json(indent=1))
    tokenizer = build_tokenizer(work / "tokenizer")

    torch.manual_seed(cfg.seed)
    vae = components.make_vae()
    classifier = ShapeClassifier()
    clip = make_world_clip(tokenizer)
    text_encoder = components.make_text_encoder(tokenizer)
    unet = components.make_unet(cfg.unet_width)
    ema = {"ema_unet": copy.deepcopy(unet), "ema_text_encoder": copy.deepcopy(text_encoder)}

    # --- VAE: a plain autoencoder on the posterior mode (sampled latents gave blobs) ------------------------
    def vae_step(step: int, g: torch.Generator) -> torch.Tensor:
        x, _, _ = world_batch(cfg.vae_batch, g)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.mode()).sample
        return F.mse_loss(recon, x) + 1e-6 * post.kl().mean()

    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    _run_stage("vae", work, cfg, cfg.vae_steps, {"vae": vae}, opt, cfg.vae_lr, vae_step)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x, _, _ = world_batch(512, step_generator(cfg.seed, "vae", 10**6))
        std = vae.encode(x).latent_dist.mode().std().item()
    vae.register_to_config(scaling_factor=1.0 / std)

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        return vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)

    # --- Classifier: half crisp images, half VAE reconstructions ---------------------------------------------
    def classifier_step(step: int, g: torch.Generator) -> torch.Tensor:
        x, _, labels = world_batch(cfg.classifier_batch, g)
        half = cfg.classifier_batch // 2
        x = torch.cat([x[:half], reconstruct(x[half:])])
        logits = classifier(x)
        return sum(F.cross_entropy(logits[k], labels[k]) for k in HEADS)

    if "classifier" in stages:
        opt = torch.optim.AdamW(classifier.parameters(), lr=2e-3)
        _run_stage(
            "classifier", work, cfg, cfg.classifier_steps, {"classifier": classifier}, opt, 2e-3, classifier_step
        )

    # --- World CLIP: contrastive on (image, full caption); half the images are reconstructions -------------
    def clip_step(step: int, g: torch.Generator) -> torch.Tensor:
        x, prompts, _ = world_batch(cfg.clip_batch, g, p_partial=0.0)
        half = cfg.clip_batch // 2
        x = torch.cat([x[:half], reconstruct(x[half:])])
        ids = tokenizer(prompts, padding="max_length", return_tensors="pt").input_ids
        return clip(input_ids=ids, pixel_values=x, return_loss=True).loss

    if "clip" in stages:
        opt = torch.optim.AdamW(clip.parameters(), lr=1e-3)
        _run_stage("clip", work, cfg, cfg.clip_steps, {"clip": clip}, opt, 1e-3, clip_step)

    # --- UNet + text encoder jointly, eps-prediction, classifier-free dropout, EMA --------------------------
    ddpm, _ = components.make_schedulers()
    sf = vae.config.scaling_factor

    def unet_step(step: int, g: torch.Generator) -> torch.Tensor:
        x, prompts, _ = world_batch(cfg.unet_batch, g)
        drop = torch.rand(len(prompts), generator=g) < cfg.p_uncond
        prompts = ["" if d else p for p, d in zip(prompts, drop)]
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.mode() * sf
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, ddpm.config.num_train_timesteps, (len(prompts),), generator=g)
        ids = tokenizer(prompts, padding="max_length", return_tensors="pt").input_ids
        cond = text_encoder(ids).last_hidden_state
        pred = unet(ddpm.add_noise(latents, noise, t), t, cond).sample
        return F.mse_loss(pred, noise)

    trained = {"unet": unet, "text_encoder": text_encoder}
    live = [p for m in trained.values() for p in m.parameters()]
    shadow = [p for m in ema.values() for p in m.parameters()]

    @torch.no_grad()
    def ema_update() -> None:
        for s, p in zip(shadow, live):
            s.lerp_(p, 1 - cfg.ema_decay)

    if "unet" in stages:
        opt = torch.optim.AdamW(live, lr=cfg.unet_lr, weight_decay=0.0)
        _run_stage("unet", work, cfg, cfg.unet_steps, {**trained, **ema}, opt, cfg.unet_lr, unet_step, ema_update)

    return {
        "tokenizer": tokenizer, "vae": vae, "classifier": classifier.eval(), "clip": clip.eval(),
        "unet": ema["ema_unet"].eval(), "text_encoder": ema["ema_text_encoder"].eval(),
    }  # fmt: skip


def export_bundle(models: dict, out: str | Path, cfg: WorldTrainConfig | None = None) -> None:
    """Write the bundle: pipeline/ (diffusers layout), classifier/, clip/, all weights fp16 safetensors."""
    out = Path(out)
    pipe = components.assemble_pipeline(models["tokenizer"], models["text_encoder"], models["vae"], models["unet"])
    pipe.to(torch.float16).save_pretrained(out / "pipeline", safe_serialization=True)
    pipe.to(torch.float32)
    models["classifier"].save(out / "classifier")
    clip = copy.deepcopy(models["clip"]).to(torch.float16)
    clip.save_pretrained(out / "clip", safe_serialization=True)
    models["tokenizer"].save_pretrained(out / "clip")
    about = {"trained": True, "what": "erasekit shapes world, trained by erasekit.world.train"}
    if cfg is not None:
        about["config"] = cfg.model_dump()
    (out / "README.json").write_text(json.dumps(about, indent=1))
