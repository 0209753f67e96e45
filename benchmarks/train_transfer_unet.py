"""A second shapes-world UNet on the bundled, frozen text encoder: the plug-and-play transfer test of AdvUnlearn.

    python benchmarks/train_transfer_unet.py --work runs/unet2 [--seed 1] [--steps 1500] [--batch 32]

Trains a fresh UNet (another seed, optionally another width) from scratch with the bundled VAE and the bundled
text encoder frozen, the same data, loss, EMA and lr schedule as `erasekit.world.train`; resumable (rerun the
same command). Writes the EMA UNet in diffusers layout to `<work>/ema_unet`, which the CLI takes as
`--unet <work>/ema_unet` beside `--text-encoder <erased encoder>`.

Measured (`--seed 1 --steps 2500 --batch 64`, 23 min on 2 idle cores): on the 50 + 50 + 200 held-out prompts the
second UNet with the bundled encoder draws circles for 98 % of circle prompts, other shapes 0.94, world FID 1.64
(without circle prompts 2.55). With the AdvUnlearn circle encoder trained on the first UNet (`transfer_advunlearn.py`;
the reference of eq. 4 is the second UNet with the bundled encoder):
- shapes recipe (anchor square, eta 0.25, training seed 0): circles 0 %, soft ASR 18 %, token ASR 2 %, other
  shapes 0.96, colour 0.985, FID 2.03 (without circles 2.73). On the first UNet the same encoder has soft ASR 6 %.
- eta 0: circles 0 %, soft 38 %, token 2 %, other shapes 0.96, FID 1.84 (without circles 2.62; first UNet:
  soft 18 %). eta 0.5: circles 2 %, soft 18 %, token 2 % (first UNet: soft 6 %, token 14 %, FID 2.46).
- the paper's empty reference (`--set anchor=null --eta 1 --gamma 3`, an earlier recipe): circles 0 %, soft 4 %,
  token 0 %, other shapes 0.98, FID 2.53.
1,000 steps at batch 32 was too weak (other shapes 0.36).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from erasekit import load_pipeline
from erasekit.world import components
from erasekit.world.train import WorldTrainConfig, _run_stage, world_batch


def train_unet(work: Path, cfg: WorldTrainConfig) -> torch.nn.Module:
    """The EMA UNet after `cfg.unet_steps` steps on eps-prediction with classifier-free dropout."""
    pipe = load_pipeline("shapes")
    vae, te, tok = pipe.vae.requires_grad_(False), pipe.text_encoder.requires_grad_(False), pipe.tokenizer
    torch.manual_seed(cfg.seed)
    unet = components.make_unet(cfg.unet_width)
    ema = copy.deepcopy(unet)
    ddpm, _ = components.make_schedulers()
    sf = vae.config.scaling_factor

    def step_fn(step: int, g: torch.Generator) -> torch.Tensor:
        x, prompts, _ = world_batch(cfg.unet_batch, g)
        drop = torch.rand(len(prompts), generator=g) < cfg.p_uncond
        prompts = ["" if d else p for p, d in zip(prompts, drop, strict=True)]
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.mode() * sf  # (B, 4, 8, 8)
            ids = tok(prompts, padding="max_length", return_tensors="pt").input_ids
            cond = te(ids).last_hidden_state  # (B, 24, 64), frozen encoder
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, ddpm.config.num_train_timesteps, (len(prompts),), generator=g)
        return F.mse_loss(unet(ddpm.add_noise(latents, noise, t), t, cond).sample, noise)

    @torch.no_grad()
    def ema_update() -> None:
        for s, p in zip(ema.parameters(), unet.parameters(), strict=True):
            s.lerp_(p, 1 - cfg.ema_decay)

    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    modules = {"unet": unet, "ema_unet": ema}
    _run_stage("unet", work, cfg, cfg.unet_steps, modules, opt, cfg.unet_lr, step_fn, ema_update)
    return ema.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("runs/unet2"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args()
    cfg = WorldTrainConfig(seed=args.seed, unet_steps=args.steps, unet_batch=args.batch, unet_width=args.width)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "config.json").write_text(cfg.model_dump_json(indent=1))
    train_unet(args.work, cfg).save_pretrained(str(args.work / "ema_unet"), safe_serialization=True)
    print(f"wrote {args.work / 'ema_unet'}")


if __name__ == "__main__":
    main()
