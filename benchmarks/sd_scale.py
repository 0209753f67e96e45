"""What erasure costs at Stable Diffusion v1.4's real size: seconds and peak memory per unit of work, and the
projected time of whole runs. Random weights with SD v1.4's exact architecture (`erasekit.skeleton`), nothing
downloaded.

    python benchmarks/sd_scale.py [--device cpu|cuda] [--dtypes fp32 bf16] [--width full|tiny] [--repeats 2]

`--repeats 0` times one cold run per unit (full size on a CPU).

Each measurement runs in its own process (so the peak memory is that unit's): one ESD step (sd/esd-nudity), one
AdvUnlearn iteration (sd/advunlearn-nudity, cheap schedule, after its trajectory bank; the bank's UNet rows are
counted and costed from the measured UNet row time), 1,000 ItD SAE activations (sd/itd's SAE on 768-d rows), one
512x512 image (25 steps, CFG) and one token-attack step. The faithful schedule's UNet calls per iteration are
counted on the same model. Projections: 1,000 AdvUnlearn iterations (the authors' schedule length) and 1,000 ESD
steps, each with its bank or partial-DDIM cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from erasekit.attacks import AttackConfig, run_attack
from erasekit.config import load_recipe, resolve
from erasekit.domains.sd import retain_prompts
from erasekit.methods.advunlearn import AdvUnlearnConfig, AdvUnlearnTrainer
from erasekit.methods.esd import EsdConfig, EsdTrainer, step_generator
from erasekit.methods.itd.sae import SaeTrainConfig, TopKSAE
from erasekit.pipeline import resolve_device, resolve_dtype
from erasekit.skeleton import sd_pipeline

STAGES = ("image", "esd", "advunlearn", "sae", "token_attack")


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runs(repeats: int) -> int:
    """How many times `timed` calls fn: one warm-up then `repeats` timed runs; repeats 0 is one cold timed run (full
    size on a CPU, where a unit takes minutes and the warm-up's one-off costs are small beside it)."""
    return repeats + 1 if repeats > 0 else 1


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of fn() over its timed runs (`runs`: the last max(repeats, 1) calls)."""
    times = []
    for _ in range(runs(repeats)):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    timed_runs = sorted(times[-max(repeats, 1) :])
    return timed_runs[len(timed_runs) // 2]


def train_step(trainer: EsdTrainer, step: int) -> None:
    g = step_generator(trainer.config.seed, step)
    trainer.optimizer.zero_grad(set_to_none=True)
    with trainer.autocast:
        loss = trainer.loss(step, g)
    loss.backward()
    trainer.optimizer.step()


def measure(stage: str, width: str, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """One stage's seconds per unit and peak memory, in this process."""
    pipe = sd_pipeline(width).to(device)
    out: dict = {"stage": stage, "dtype": str(dtype).removeprefix("torch."), "device": device.type}
    if stage == "image":
        pipe.to(dtype=dtype)
        gen = [torch.Generator().manual_seed(0)]
        run = lambda: pipe(["a photo of a church"], num_inference_steps=25, guidance_scale=7.5, generator=gen)  # noqa: E731
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        out.update(unit=f"{size}x{size} image, 25 steps", seconds=timed(run, repeats, device))
    elif stage in ("esd", "advunlearn"):
        name = "sd/esd-nudity" if stage == "esd" else "sd/advunlearn-nudity"
        cls = EsdConfig if stage == "esd" else AdvUnlearnConfig
        extra = {"warmup": 0, "cache_size": 1} if stage == "advunlearn" else {}
        extra["retain_prompts"] = retain_prompts() if stage == "advunlearn" else []
        cfg = resolve(cls, load_recipe(name), {"concepts": ["nudity"], "gradient_checkpointing": True, **extra})
        trainer = (EsdTrainer if stage == "esd" else AdvUnlearnTrainer)(pipe, cfg, dtype)
        if trainer.xt_mode == "cached":
            t0 = time.perf_counter()
            trainer.build_bank()
            sync(device)
            out["bank_rows_measured"] = trainer.counter.rows
            out["bank_row_seconds"] = (time.perf_counter() - t0) / max(trainer.counter.rows, 1)
        before = trainer.counter.calls
        steps = iter(range(10**6))
        out["seconds"] = timed(lambda: train_step(trainer, next(steps)), repeats, device)
        out["unet_calls_per_unit"] = (trainer.counter.calls - before) / runs(repeats)
        out["unit"] = "ESD step (partial DDIM x_t)" if stage == "esd" else "AdvUnlearn iteration (cheap)"
        if stage == "advunlearn":
            rows = 2 * 16 * cfg.ddim_steps * 2  # two banks x 16 trajectories (the recipe) x steps x CFG
            out["bank_seconds_projected"] = rows * out["bank_row_seconds"]
            out["faithful_unet_calls_per_iteration"] = faithful_calls(cfg)
    elif stage == "sae":
        d = pipe.text_encoder.config.hidden_size
        recipe = load_recipe("sd/itd")
        sae_cfg = SaeTrainConfig(**{k: v for k, v in recipe.items() if k in SaeTrainConfig.model_fields})
        sae = TopKSAE(d, sae_cfg.width, sae_cfg.k).to(device)
        rows = torch.randn(1000, d, device=device)
        opt = torch.optim.Adam(sae.parameters(), lr=sae_cfg.lr)

        def sae_step() -> None:
            opt.zero_grad(set_to_none=True)
            recon = sae(rows)[0]
            ((recon - rows) ** 2).mean().backward()
            opt.step()

        out.update(unit=f"1,000 SAE activations (train, width {sae_cfg.width}, k {sae_cfg.k})")
        out["seconds"] = timed(sae_step, repeats, device)
    elif stage == "token_attack":
        pipe.to(dtype=dtype)
        config = AttackConfig(sample_steps=25, guidance=7.5, check_every=0, batch_size=1, token={"steps": 1})
        t0 = time.perf_counter()
        run_attack(pipe, None, ["a photo of a church"], [0], "token", config, "church")
        out.update(unit="token attack, 1 prompt, 1 step (+ its 25-step trajectory and 2 images)")
        out["seconds"] = time.perf_counter() - t0
    out["peak_gib"] = peak_bytes(device) / 2**30
    return out


def faithful_calls(cfg: AdvUnlearnConfig) -> float:
    """UNet calls per iteration of the faithful schedule (counted formula, as the authors' code): each attack step
    and the outer step draw x_t by partial DDIM (on average ddim_steps / 2 CFG calls) and one target call."""
    per_draw = cfg.ddim_steps / 2 + 1
    return cfg.attack.steps * (per_draw + 1) + per_draw + 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtypes", nargs="+", default=["fp32"])
    ap.add_argument("--width", default="full", choices=("full", "tiny"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # internal: one stage in a child process
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.stage:
        print(json.dumps(measure(args.stage, args.width, device, resolve_dtype(args.dtype, device), args.repeats)))
        return
    rows = []
    for dtype in args.dtypes:
        for stage in STAGES:
            cmd = [sys.executable, __file__, "--stage", stage, "--dtype", dtype, "--width", args.width,
                   "--repeats", str(args.repeats), "--device", str(device)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append({"stage": stage, "dtype": dtype, "error": proc.stderr.strip().splitlines()[-1]})
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"SD v1.4 sizes ({args.width}), random weights, device {device}")
    print("| stage | dtype | unit | seconds | UNet calls / unit | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['stage']} | {r['dtype']} | failed: {r['error'][:80]} | | | |")
            continue
        calls = r.get("unet_calls_per_unit")
        print(f"| {r['stage']} | {r['dtype']} | {r['unit']} | {r['seconds']:.2f} | "
              f"{'' if calls is None else f'{calls:.1f}'} | {r['peak_gib']:.1f} |")  # fmt: skip
    for r in rows:
        if r.get("stage") == "advunlearn" and "seconds" in r:
            total = 1000 * r["seconds"] + r["bank_seconds_projected"]
            print(f"AdvUnlearn, 1,000 iterations ({r['dtype']}): {total / 60:.1f} min projected "
                  f"({r['seconds']:.2f} s/iteration + bank {r['bank_seconds_projected']:.0f} s); the faithful "
                  f"schedule makes {r['faithful_unet_calls_per_iteration']:.0f} UNet calls per iteration, the cheap "
                  f"one {r['unet_calls_per_unit']:.1f}")  # fmt: skip
        if r.get("stage") == "esd" and "seconds" in r:
            print(f"ESD, 1,000 steps ({r['dtype']}): {1000 * r['seconds'] / 60:.1f} min projected")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
