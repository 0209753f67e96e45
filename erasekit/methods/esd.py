"""ESD (Erased Stable Diffusion): fine-tune the UNet or the text encoder so that the concept's noise prediction
points away from the concept (eq. 2-3 of the method notes).

    target  = eps_o(x_t|a) - eta * (eps_o(x_t|c_e) - eps_o(x_t|a))               (eq. 2, a = null)
    loss    = || eps_theta(x_t|c_e) - target ||^2                                (eq. 3)
            + gamma * E_{c_bar in retain} || eps_theta(x_t|c_bar) - eps_o(x_t|c_bar) ||^2   (optional, eq. 6)

Shapes: x_t (B, C, h, w) latents; t (B,) DDPM timesteps; contexts (B, L, D); the anchor contexts (A, P, L, D).

The reference prompt a is the empty prompt in the paper (`anchor=None`). With `anchor` set to words, a is each
training prompt with the concept word replaced by that word ("" drops it): the push is then away from the concept
alone, and the prompt's other words (a colour, a background, a subject) keep their meaning. With several words,
eps_o(x_t|a) is the mean of their predictions (extra rows of the same UNet call). gamma = 0 is the paper's ESD;
gamma > 0 adds AdvUnlearn's utility-retention term (eq. 6, second term) on a batch of retain prompts, whose x_t
come from the original model on those prompts; concept and retain rows share one UNet call.

x_t comes from the original model: `xt_mode="ddim"` (faithful, as the ESD/AdvUnlearn code) runs DDIM (eta 0)
from fresh noise on the concept prompt at `start_guidance` and stops at a random step i of `ddim_steps`;
`xt_mode="cached"` draws (trajectory, step) from a bank of full trajectories sampled once at the start. Either
way the UNet is queried at a DDPM timestep drawn inside the DDIM interval [tau_i, tau_i + 1000/ddim_steps).
(The ESD code maps the step index to the timestep in reverse; we keep x_t's noise level and t aligned.)

Recipes (the options per domain and kind of concept) are YAML files in `erasekit/recipes/`; what they measure
is in docs/results.md.

`EsdTrainer` is the engine AdvUnlearn reuses: `concept_context(...)` (the context the concept rows are trained
at) is what a subclass changes, `concept_rows(...)` also their x_t where they follow other trajectories,
`extra_state()` adds modules to the checkpoint, and the UNet-evaluation counter, checkpoint/resume, mixed precision,
the optional weight average (`ema`: the artifact then holds the moving average of the iterates, not the last one)
and the artifact writing are shared.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import CLIPTextModel

from erasekit.artifact import save_artifact
from erasekit.checkpoint import load_checkpoint, save_checkpoint
from erasekit.config import config_hash
from erasekit.diffusion import (
    BankCache,
    ModelPair,
    TrajectoryBank,
    UnetCounter,
    ddim_partial,
    ddim_timesteps,
    jitter_timesteps,
)
from erasekit.errors import ErasekitError
from erasekit.methods.trainable import select_parameters
from erasekit.text import check_prompts, concept_tokens, encode, token_ids

Retain = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]  # x_t (R,C,h,w), t (R,), ids (R,L), ctx_o (R,L,D)


class EraseConfig(BaseModel):
    """Options shared by ESD and AdvUnlearn; defaults as in the ESD code for SD (lr 1e-5, eta 1, start guidance 3,
    DDIM 50, batch 1). The shipped recipes (`erasekit recipes`) write every option out per domain."""

    model_config = ConfigDict(extra="forbid")

    concepts: list[str] = Field(min_length=1)
    prompts: list[str] = []  # training prompts naming the concept(s); [] = the concept words themselves
    component: Literal["unet", "text_encoder"] = "unet"
    part: str = "xattn"  # unet: xattn | noxattn | full; text_encoder: all | attn | mlp
    layers: list[int] | None = None  # text-encoder layers to train (None = all)
    steps: int = Field(1000, ge=0)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(1, ge=1)
    eta: float = 1.0  # negative guidance of eq. 2
    start_guidance: float = 3.0
    ddim_steps: int = Field(50, ge=2)
    cache_size: int = Field(64, ge=1)  # trajectories in each bank of cached x_t
    seed: int = 0
    checkpoint_every: int = Field(100, ge=1)
    gamma: float = Field(0.0, ge=0)  # weight of the retain term (eq. 6); 0 = the paper's ESD
    retain_prompts: list[str] = []  # filled by the domain when gamma > 0
    retain_batch: int = Field(5, ge=1)  # retain prompts per step, drawn without replacement
    retain_null: bool = False  # also keep the empty prompt (CFG's unconditional branch) in every retain batch
    anchor: list[str] | None = Field(None, min_length=1)  # eq. 2's reference: None = the empty prompt; words = the
    # prompt with each of them for the concept (eps averaged over the words); a single string is one word
    gradient_checkpointing: bool = False  # recompute UNet activations in backward (memory for time, same result)
    ema: float | None = Field(None, gt=0, lt=1)  # decay of an exponential moving average of the trained weights,
    # which the artifact then holds (None: the last iterate). Weight averaging curbs robust overfitting in adversarial
    # training (Gowal et al. 2020 use 0.995); diffusers' EMAModel, whose decay ramps up as (1 + n) / (10 + n).

    @field_validator("anchor", mode="before")
    @classmethod
    def _one_word(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class EsdConfig(EraseConfig):
    """ESD options: the shared ones plus where x_t comes from."""

    xt_mode: Literal["ddim", "cached"] = "ddim"


def mixed_precision(trained: torch.nn.Module, pair: ModelPair, dtype: torch.dtype | None):
    """Cast the frozen modules of `pair` to `dtype` (bf16 / fp16) and return the autocast context the loss runs in;
    the trained module keeps fp32 weights (Adam on bf16 weights loses small updates). fp32 / None: no-op."""
    if dtype in (None, torch.float32):
        return nullcontext()
    for m in {id(m): m for m in (pair.unet, pair.unet_o, pair.text_encoder, pair.text_encoder_o)}.values():
        if m is not trained:
            m.to(dtype)
    return torch.autocast(trained.device.type, dtype=dtype)


class Averaged(torch.nn.Module):
    """An EMAModel's averaged weights as buffers (the same tensors, updated in place), so checkpoints carry them."""

    def __init__(self, ema: EMAModel) -> None:
        super().__init__()
        for i, shadow in enumerate(ema.shadow_params):
            self.register_buffer(f"p{i}", shadow)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The randomness of one step: a function of (seed, step) only, so a resumed run replays it exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class EsdTrainer:
    """Trains `pipe`'s chosen component in place against eq. 3; `run(output)` writes checkpoints and the artifact."""

    method = "esd"

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        config: EraseConfig,
        dtype: torch.dtype | None = None,
        text_encoder_o: CLIPTextModel | None = None,
        banks: BankCache | None = None,
    ) -> None:
        """`dtype` bf16/fp16: the frozen parts run in it under autocast; the trained component stays fp32.
        `text_encoder_o`: the original encoder when `pipe`'s own encoder is already erased (a UNet trained behind an
        erased encoder); eq. 2's targets then come from the original encoder and UNet. `banks`: trajectory banks
        shared with trainers on the same original model (an equal bank is built once)."""
        self.config = config
        self.banks = banks
        self.unet_o_fingerprint: torch.Tensor | None = None  # BankCache.fingerprint of the original UNet, on first use
        self.xt_mode = self.x_source(config)
        self.pipe = pipe
        self.scheduler = pipe.scheduler
        self.tokenizer = pipe.tokenizer
        for c in config.concepts:
            concept_tokens(self.tokenizer, c)
        self.prompts = config.prompts or list(config.concepts)
        check_prompts(self.tokenizer, self.prompts)
        pipe.unet.requires_grad_(False).eval()
        pipe.text_encoder.requires_grad_(False).eval()
        self.pair = ModelPair.with_frozen_copy(pipe.unet, pipe.text_encoder, config.component, pipe.scheduler)
        if text_encoder_o is not None:
            self.pair.text_encoder_o = text_encoder_o.requires_grad_(False).eval()
        self.module = pipe.unet if config.component == "unet" else pipe.text_encoder
        self.autocast = mixed_precision(self.module, self.pair, dtype)
        if config.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        self.params = [p for _, p in select_parameters(self.module, config.component, config.part, config.layers)]
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        self.ema = None if config.ema is None else EMAModel(self.params, decay=config.ema)
        self.counter = UnetCounter().attach(self.pair.unet, self.pair.unet_o)
        self.taus = ddim_timesteps(config.ddim_steps, self.scheduler)
        self.ids = token_ids(self.tokenizer, self.prompts)  # (P, L)
        self.null_ids = token_ids(self.tokenizer, [""])  # (1, L)
        with torch.no_grad():
            self.ctx_o = encode(self.pair.text_encoder_o, self.ids)  # (P, L, D), original encoder
            self.null_o = encode(self.pair.text_encoder_o, self.null_ids)  # (1, L, D)
            self.anchor_o = (  # (A, P, L, D): eq. 2's reference contexts (A anchor words) per training prompt
                self.null_o.expand(1, len(self.prompts), -1, -1)
                if config.anchor is None
                else torch.stack(
                    [encode(self.pair.text_encoder_o, token_ids(self.tokenizer, a)) for a in self.anchor_prompts()]
                )
            )
        self.latent_shape = (
            pipe.unet.config.in_channels,
            pipe.unet.config.sample_size,
            pipe.unet.config.sample_size,
        )
        self.retain_ids: torch.Tensor | None = None  # (R, L)
        self.retain_o: torch.Tensor | None = None  # (R, L, D), original encoder
        if config.gamma > 0:
            check_prompts(self.tokenizer, config.retain_prompts)
            self.retain_ids = token_ids(self.tokenizer, config.retain_prompts)
            with torch.no_grad():
                self.retain_o = encode(self.pair.text_encoder_o, self.retain_ids)
        self.bank: TrajectoryBank | None = None
        self.retain_bank: TrajectoryBank | None = None
        self.log: dict[str, float] = {}

    @staticmethod
    def x_source(config: EraseConfig) -> str:
        """Where x_t comes from: "ddim" (fresh partial DDIM each step) or "cached" (trajectory banks)."""
        return config.xt_mode

    def anchor_prompts(self) -> list[list[str]]:
        """Per anchor word, the training prompts with the concept word replaced by it (eq. 2's reference prompts)."""
        return self.replaced_prompts(self.config.anchor)

    def replaced_prompts(self, words: list[str]) -> list[list[str]]:
        """Per word, the training prompts with the concept word replaced by it ('' deletes it)."""
        word = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in self.config.concepts) + r")\b")
        if not any(word.search(p) for p in self.prompts):
            raise ErasekitError(
                "replacing the concept word needs training prompts that name the concept: give --set prompts=[...]"
            )
        out = [[" ".join(word.sub(a, p).split()) for p in self.prompts] for a in words]
        check_prompts(self.tokenizer, [p for ps in out for p in ps])
        return out

    # ---- x_t ---------------------------------------------------------------------------------------------
    def make_bank(self, ctx: torch.Tensor, n: int, salt: int) -> TrajectoryBank:
        """n cached trajectories over prompts `ctx` (P, L, D); deterministic in (seed, salt), so resume rebuilds it
        (or takes it from `banks` when a trainer on the same original model built it)."""
        cfg = self.config

        def build() -> TrajectoryBank:
            g = torch.Generator().manual_seed(cfg.seed * 7 + salt)
            noise = torch.randn(n, *self.latent_shape, generator=g)
            return TrajectoryBank(
                self.pair, self.scheduler, ctx, self.null_o, noise, None, cfg.ddim_steps, cfg.start_guidance
            )

        if self.banks is None:
            return build()
        if self.unet_o_fingerprint is None:  # once per trainer: the original UNet is frozen while it trains
            self.unet_o_fingerprint = BankCache.fingerprint(self.pair.unet_o)
        key = (n, cfg.seed, salt, self.latent_shape, cfg.ddim_steps, cfg.start_guidance)
        return self.banks.get(key, self.unet_o_fingerprint, ctx, self.null_o, build)

    def build_bank(self) -> None:
        """The cached trajectories of xt_mode="cached" (concept prompts, and retain prompts when gamma > 0)."""
        self.bank = self.make_bank(self.ctx_o, self.config.cache_size, 1)
        if self.config.gamma > 0:
            self.retain_bank = self.make_bank(self.retain_o, self.config.cache_size, 2)

    def sample_xt(
        self, batch: int, g: torch.Generator, bank: TrajectoryBank | None = None, ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t (B, C, h, w), DDPM t (B,), prompt index (B,)) from the original model on prompts `ctx` (P, L, D).

        Defaults: the concept prompts and their bank. Cached mode reads the bank; ddim mode samples afresh.
        """
        cfg = self.config
        bank = self.bank if ctx is None else bank
        ctx = self.ctx_o if ctx is None else ctx
        if self.xt_mode == "cached":
            row, step = bank.draw(batch, g)
            x, prompt = bank.latents[row, step], bank.prompt[row]
        else:
            prompt = torch.randint(len(ctx), (batch,), generator=g)
            step = torch.randint(cfg.ddim_steps, (batch,), generator=g)
            noise = torch.randn(batch, *self.latent_shape, generator=g)
            null = self.null_o.expand(batch, -1, -1)
            x = ddim_partial(
                self.pair, self.scheduler, ctx[prompt], null, step, noise, cfg.ddim_steps, cfg.start_guidance
            )
        return x, jitter_timesteps(step, cfg.ddim_steps, g, self.taus), prompt

    # ---- losses ------------------------------------------------------------------------------------------
    def context(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L, D) context of the model being trained (grad flows when the text encoder is trained)."""
        return encode(self.pair.text_encoder, ids)

    def esd_target(self, eps_anchor: torch.Tensor, eps_concept: torch.Tensor) -> torch.Tensor:
        return eps_anchor - self.config.eta * (eps_concept - eps_anchor)  # eq. 2

    def retain_indices(self, step: int) -> torch.Tensor:
        """(retain_batch,) prompt indices: drawn without replacement, refilled (new permutation) when used up."""
        n, r = len(self.retain_ids), self.config.retain_batch
        out = []
        for pos in range(step * r, (step + 1) * r):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + pos // n))
            out.append(perm[pos % n])
        return torch.stack(out)

    def retain_rows(self, step: int, g: torch.Generator) -> Retain:
        """This step's retain prompts (plus "" with retain_null: the sampler's unconditional eps reads the trained
        encoder too) with their x_t from the original model."""
        r = self.retain_indices(step)
        ids, ctx = self.retain_ids[r], self.retain_o[r]
        if self.config.retain_null:
            ids, ctx = torch.cat([ids, self.null_ids]), torch.cat([ctx, self.null_o])
        x, t, _ = self.sample_xt(len(ids), g, self.retain_bank, self.retain_o)
        return x, t, ids, ctx

    def concept_context(
        self, step: int, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        """(B, L, D) context the trained model sees for the concept rows: the concept prompts (ESD)."""
        return self.context(self.ids[prompt])

    def concept_rows(
        self, step: int, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The concept rows of eq. 3 as (x_t (B, C, h, w), t (B,), prompt (B,), context (B, L, D)): the sampled x_t
        at `concept_context`; a method whose rows follow other trajectories replaces some of them."""
        return x, t, prompt, self.concept_context(step, x, t, prompt, g)

    def loss(self, step: int, g: torch.Generator) -> torch.Tensor:
        """Eq. 3 on a batch of x_t (+ gamma times the retain term of eq. 6), in one UNet call per model."""
        cfg = self.config
        x, t, prompt = self.sample_xt(cfg.batch_size, g)
        retain = self.retain_rows(step, g) if cfg.gamma > 0 else None
        return self.objective(*self.concept_rows(step, x, t, prompt, g), retain)

    def objective(
        self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, ctx: torch.Tensor, retain: Retain | None
    ) -> torch.Tensor:
        """|| eps_theta(x_t|ctx) - target(c_e) ||^2 (eq. 3; ctx (B, L, D) may be an adversarial prompt's context)
        + gamma * || eps_theta(x_r|c_bar) - eps_o(x_r|c_bar) ||^2 over the retain rows (eq. 6)."""
        b, n_a = len(x), len(self.anchor_o)
        anchors = self.anchor_o[:, prompt].flatten(0, 1)  # (A * B, L, D), anchor-major
        xo, to, co = [x.repeat(n_a, 1, 1, 1), x], [t.repeat(n_a), t], [anchors, self.ctx_o[prompt]]
        xs, ts, cs = [x], [t], [ctx]
        if retain is not None:
            xr, tr, ids_r, ctx_r = retain
            xo, to, co = xo + [xr], to + [tr], co + [ctx_r]
            xs, ts, cs = xs + [xr], ts + [tr], cs + [self.context(ids_r)]
        cat = torch.cat
        e_o, e = self.pair.eps_joint(cat(xo), cat(to), cat(co), cat(xs), cat(ts), cat(cs))
        m = n_a * b
        eps_anchor = e_o[:m].unflatten(0, (n_a, b)).mean(0)
        loss = F.mse_loss(e[:b], self.esd_target(eps_anchor, e_o[m : m + b]))  # eq. 3
        self.log["esd"] = loss.item()
        if retain is not None:
            kept = F.mse_loss(e[b:], e_o[m + b :])  # eq. 6, second term
            self.log["retain"] = kept.item()
            loss = loss + self.config.gamma * kept
        return loss

    # ---- loop --------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, torch.nn.Module]:
        """Modules besides the trained one that a checkpoint must hold (AdvUnlearn: the adversarial prompt)."""
        return {}

    def _modules(self) -> dict[str, torch.nn.Module]:
        averaged = {} if self.ema is None else {"ema": Averaged(self.ema)}
        return {"trained": self.module, **averaged, **self.extra_state()}

    def _resume(self, folder: Path) -> int:
        try:
            found = load_checkpoint(folder, self._modules(), self.optimizer)
        except ValueError as e:
            raise ErasekitError(str(e)) from None
        if found is None:
            return 0
        step, extra = found
        saved = {k: v for k, v in extra.get("config", {}).items() if k not in ("steps", "checkpoint_every")}
        mine = {k: v for k, v in self.config.model_dump().items() if k not in ("steps", "checkpoint_every")}
        if saved != mine or extra.get("method") != self.method:
            raise ErasekitError(
                f"{folder} holds a checkpoint of another run (different options): use another output folder"
            )
        self.counter.calls, self.counter.rows = extra["counter"]["unet_calls"], extra["counter"]["unet_rows"]
        if self.ema is not None:
            self.ema.optimization_step = step  # one EMA update per iteration: its decay ramp resumes where it was
        return step

    def _save(self, folder: Path, step: int) -> None:
        extra = {"config": self.config.model_dump(), "method": self.method, "counter": self.counter.as_dict()}
        save_checkpoint(folder, self._modules(), self.optimizer, step, extra)

    def run(self, output: str | Path, progress: bool = True) -> dict:
        """Train (resuming from `output/checkpoint` if present), then write the artifact; returns a summary."""
        output = Path(output)
        cfg = self.config
        ckpt = output / "checkpoint"
        start = self._resume(ckpt)
        t0 = time.perf_counter()
        setup = (self.counter.calls, self.counter.rows)
        if self.xt_mode == "cached" and start < cfg.steps:
            self.build_bank()
        bank_seconds = time.perf_counter() - t0
        bank_calls, bank_rows = self.counter.calls - setup[0], self.counter.rows - setup[1]
        loop_calls, loop_rows = self.counter.calls, self.counter.rows
        columns = (
            TextColumn(f"{self.method}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )  # fmt: skip
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("train", total=cfg.steps, completed=start, info="")
            for step in range(start, cfg.steps):
                g = step_generator(cfg.seed, step)
                self.optimizer.zero_grad(set_to_none=True)
                with self.autocast:
                    loss = self.loss(step, g)
                loss.backward()
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.step(self.params)
                self.log["loss"] = loss.item()
                info = " ".join(f"{k} {v:.4g}" for k, v in self.log.items()) + f" unet {self.counter.calls}"
                bar.update(task, advance=1, info=info)
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    self._save(ckpt, step + 1)
        trained = cfg.steps - start
        summary = {
            "method": self.method,
            "concepts": cfg.concepts,
            "component": cfg.component,
            "part": cfg.part,
            "steps": cfg.steps,
            "resumed_from": start,
            "seconds": round(time.perf_counter() - t0, 2),
            "xt_mode": self.xt_mode,
            "bank_unet_calls": bank_calls,
            "bank_unet_rows": bank_rows,
            "bank_seconds": round(bank_seconds, 2),
            "unet_calls_per_step": round((self.counter.calls - loop_calls) / trained, 2) if trained else None,
            "unet_rows_per_step": round((self.counter.rows - loop_rows) / trained, 2) if trained else None,
            "seconds_per_step": round((time.perf_counter() - t0 - bank_seconds) / trained, 4) if trained else None,
            **self.counter.as_dict(),
            **{f"last_{k}": round(v, 6) for k, v in self.log.items()},
            "output": str(output),
        }
        info = {**summary, "config": cfg.model_dump(), "config_sha256": config_hash(cfg)}
        if self.ema is not None:
            self.ema.copy_to(self.params)  # the artifact (and `pipe`, changed in place) holds the averaged weights
        save_artifact(output, self.config.component, self.module, info)
        return summary


def erase(
    pipe: StableDiffusionPipeline,
    config: EsdConfig,
    output: Path,
    progress: bool = True,
    dtype: torch.dtype | None = None,
) -> dict:
    """Run ESD on `pipe` (changed in place) and write the artifact + checkpoints to `output`; returns a summary."""
    return EsdTrainer(pipe, config, dtype).run(output, progress=progress)
