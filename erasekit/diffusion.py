"""Shared diffusion maths for erasure and attacks: the model pair, eps with CFG, DDIM x_t production, a counter.

Shapes: latents x (B, C, h, w); DDPM timesteps t (B,) long; text contexts (B, L, D); eps like x.

Everything here works in eps: a UNet trained for v-prediction (SD 2.x) has its output converted by ModelPair.

    ModelPair          the model being changed (theta) and a frozen copy of the changed component (theta_o)
    UnetCounter        counts UNet forward calls and latent rows (a forward pre-hook)
    check_scheduler    the pair and the scheduler agree on the prediction type (else a one-line error)
    ddim_timesteps     the DDIM schedule tau_0 > tau_1 > ... (diffusers "leading" spacing)
    ddim_partial       DDIM (eta 0) from noise with CFG, stopping at a chosen step per sample  (faithful ESD x_t)
    TrajectoryBank     full DDIM trajectories of the original model, sampled once and reused (cheap x_t)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from erasekit.errors import ErasekitError

PREDICTION_TYPES = ("epsilon", "v_prediction")


class UnetCounter:
    """Counts UNet evaluations: `calls` forward passes (a batched call counts once) and `rows` latents."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0
        self._handles: list = []

    def attach(self, *unets: torch.nn.Module) -> UnetCounter:
        for u in dict.fromkeys(unets):  # a shared UNet is counted once per call
            self._handles.append(u.register_forward_pre_hook(self._hook, with_kwargs=True))
        return self

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.calls += 1
        self.rows += int(sample.shape[0])

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def as_dict(self) -> dict[str, int]:
        return {"unet_calls": self.calls, "unet_rows": self.rows}


@dataclass
class ModelPair:
    """theta (unet, text_encoder) and theta_o (unet_o, text_encoder_o); exactly one component has its own frozen copy.

    When the text encoder is trained, `unet_o is unet`; when the UNet is trained, `text_encoder_o is text_encoder`.
    `prediction_type` is what the UNets output ("epsilon" or "v_prediction"); v-prediction needs the scheduler's
    `alphas_cumprod` (T,) to convert it to eps. `with_scheduler(scheduler)` sets both from a pipeline's scheduler.
    """

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    unet_o: UNet2DConditionModel
    text_encoder_o: CLIPTextModel
    prediction_type: str = "epsilon"
    alphas_cumprod: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ErasekitError(
                f"prediction_type '{self.prediction_type}' is not supported: use a model whose scheduler predicts "
                f"{' or '.join(PREDICTION_TYPES)}"
            )
        if self.prediction_type == "v_prediction" and self.alphas_cumprod is None:
            raise ErasekitError("a v_prediction ModelPair needs alphas_cumprod: build it with pair.with_scheduler()")

    @classmethod
    def with_frozen_copy(
        cls, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, component: str, scheduler=None
    ) -> ModelPair:
        """Pair whose `component` ("unet" | "text_encoder") gets one deep-copied, frozen original.

        With `scheduler`, the pair takes its prediction type and alphas_cumprod (see `with_scheduler`).
        """
        if component == "unet":
            pair = cls(unet, text_encoder, copy.deepcopy(unet).requires_grad_(False).eval(), text_encoder)
        else:
            pair = cls(unet, text_encoder, unet, copy.deepcopy(text_encoder).requires_grad_(False).eval())
        return pair if scheduler is None else pair.with_scheduler(scheduler)

    def with_scheduler(self, scheduler) -> ModelPair:
        """The same models with the scheduler's prediction_type and alphas_cumprod (T,) (any diffusers scheduler)."""
        return dataclasses.replace(
            self,
            prediction_type=scheduler.config.get("prediction_type", "epsilon"),
            alphas_cumprod=as_ddim(scheduler).alphas_cumprod.clone(),
        )

    @property
    def shared_unet(self) -> bool:
        return self.unet is self.unet_o

    def eps(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, original: bool = False) -> torch.Tensor:
        """eps_theta(x_t | ctx) or eps_theta_o: (B, C, h, w), converted from the UNet's prediction type.

        v-prediction (Salimans & Ho 2022, v = sqrt(a_t) eps - sqrt(1 - a_t) x_0 with a_t = alphas_cumprod[t]) is
        converted with eps = sqrt(a_t) * v + sqrt(1 - a_t) * x_t, linear in v, so gradients pass through unchanged.
        """
        unet = self.unet_o if original else self.unet
        t = t.to(x.device)
        out = unet(x, t, encoder_hidden_states=ctx.to(x.device)).sample
        if self.prediction_type == "epsilon":
            return out
        # coefficients from the float32 schedule, cast afterwards: fp16 sqrt(1 - a_t) loses digits near t = 0
        a = self.alphas_cumprod.to(x.device)[t.long()].reshape(-1, *[1] * (x.ndim - 1))
        return a.sqrt().to(out.dtype) * out + (1 - a).sqrt().to(out.dtype) * x

    def eps_original(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """eps_theta_o(x_t | ctx): (B, C, h, w)."""
        return self.eps(x, t, ctx, original=True)

    def eps_joint(
        self,
        x_o: torch.Tensor,
        t_o: torch.Tensor,
        ctx_o: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        ctx: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_o(x_o|ctx_o) without grad, eps_theta(x|ctx)): one UNet call when the UNet is shared, else two."""
        if self.shared_unet:
            out = self.eps(torch.cat([x_o, x]), torch.cat([t_o, t]), torch.cat([ctx_o.detach(), ctx]))
            return out[: len(x_o)].detach(), out[len(x_o) :]
        with torch.no_grad():
            e_o = self.eps(x_o, t_o, ctx_o, original=True)
        return e_o, self.eps(x, t, ctx)


def as_ddim(scheduler) -> DDIMScheduler:
    """A DDIMScheduler with the pipeline scheduler's betas (SD hub pipelines ship PNDM; x_t always uses DDIM)."""
    return scheduler if isinstance(scheduler, DDIMScheduler) else DDIMScheduler.from_config(scheduler.config)


def check_scheduler(pair: ModelPair, scheduler) -> None:
    """A one-line error when `pair` converts a different prediction type than `scheduler` (silently wrong x_t)."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind != pair.prediction_type:
        raise ErasekitError(
            f"the scheduler predicts '{kind}' but the ModelPair assumes '{pair.prediction_type}': "
            f"build the pair with pair.with_scheduler(scheduler)"
        )


def ddim_timesteps(steps: int, scheduler) -> torch.Tensor:
    """(steps,) DDPM indices tau_0 > ... > tau_{steps-1}, as DDIMScheduler.set_timesteps gives them."""
    scheduler = copy.deepcopy(as_ddim(scheduler))
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.long().clone()


def eps_cfg(
    eps_fn, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, ctx_null: torch.Tensor, guidance: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classifier-free guidance in one batched call: (guided eps, eps(x|ctx), eps(x|null)), each (B, C, h, w)."""
    both = eps_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([ctx_null, ctx]))
    e_u, e_c = both.chunk(2)
    return e_u + guidance * (e_c - e_u), e_c, e_u


def ddim_step(x: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM update (eta 0) from timestep t to t_prev (t_prev < 0: alpha_prev = alphas_cumprod[0])."""
    a = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else alphas_cumprod[0]
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


@torch.no_grad()
def ddim_partial(
    pair: ModelPair,
    scheduler,
    ctx: torch.Tensor,
    ctx_null: torch.Tensor,
    stop: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 50,
    guidance: float = 3.0,
) -> torch.Tensor:
    """x at DDIM step stop[b] (tau_{stop[b]}) for each sample, from `noise` with the original model: (B, C, h, w).

    Runs max(stop) DDIM steps on the whole batch (one CFG call each); stop = 0 returns the noise itself.
    """
    check_scheduler(pair, scheduler)
    scheduler = as_ddim(scheduler)
    taus = ddim_timesteps(steps, scheduler)
    noise, stop = noise.to(pair.unet_o.device, pair.unet_o.dtype), stop.to(pair.unet_o.device)
    ac = scheduler.alphas_cumprod.to(noise.device, noise.dtype)
    x, out = noise * scheduler.init_noise_sigma, noise.clone()
    for i in range(int(stop.max())):
        t = taus[i].repeat(len(x)).to(x.device)
        e, _, _ = eps_cfg(pair.eps_original, x, t, ctx, ctx_null, guidance)
        t_prev = int(taus[i + 1]) if i + 1 < steps else -1
        x = ddim_step(x, e, int(taus[i]), t_prev, ac)
        done = stop == i + 1
        out[done] = x[done]
    return out


class TrajectoryBank:
    """Full DDIM trajectories of the original model, sampled once and reused (the cheap x_t source).

    latents (N, S, C, h, w): x at tau_0..tau_{S-1}; eps_cond (N, S, C, h, w): the original model's conditional
    eps there (the CFG call computes it anyway); prompt (N,): the context index of each trajectory. Built from
    `noise` (N, C, h, w) with N * S / batch_size UNet calls.
    """

    def __init__(
        self,
        pair: ModelPair,
        scheduler,
        ctx: torch.Tensor,
        ctx_null: torch.Tensor,
        noise: torch.Tensor,
        prompt: torch.Tensor | None = None,
        steps: int = 50,
        guidance: float = 3.0,
        batch_size: int = 64,
    ) -> None:
        check_scheduler(pair, scheduler)
        self.taus = ddim_timesteps(steps, scheduler)
        self.steps = steps
        self.prompt = torch.arange(len(noise)) % len(ctx) if prompt is None else prompt
        parts = []
        for i in range(0, len(noise), batch_size):
            idx = self.prompt[i : i + batch_size]
            null = ctx_null[:1].expand(len(idx), -1, -1)
            parts.append(_trajectory(pair, scheduler, ctx[idx], null, noise[i : i + batch_size], self.taus, guidance))
        self.latents, self.eps_cond = (torch.cat(p) for p in zip(*parts, strict=True))

    def draw(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(row (B,), step (B,)): random bank points; x_t = latents[row, step] sits at timestep taus[step]."""
        row = torch.randint(len(self.latents), (batch,), generator=generator)
        step = torch.randint(self.steps, (batch,), generator=generator)
        return row, step


class BankCache:
    """Trajectory banks kept for trainers whose eq. 2 targets come from the same original model (the robust
    method's stages: stage 1 trains the text encoder, stage 2 the UNet behind it, both against the one original
    encoder and UNet). `get` returns a bank built earlier when everything that makes it is equal: its key (noise
    size, seed, salt, DDIM options), the prompt and null contexts (P, L, D) and the original UNet's `fingerprint`;
    otherwise it builds and keeps a new one. Banks are read-only."""

    def __init__(self) -> None:
        self.entries: list[tuple[tuple, torch.Tensor, torch.Tensor, torch.Tensor, TrajectoryBank]] = []

    def get(
        self,
        key: tuple,
        unet_fingerprint: torch.Tensor,
        ctx: torch.Tensor,
        ctx_null: torch.Tensor,
        build: Callable[[], TrajectoryBank],
    ) -> TrajectoryBank:
        """The bank of (key, the original UNet's `fingerprint`, ctx, ctx_null), built by `build()` on a miss."""
        for k, w, c, n, bank in self.entries:
            if k == key and torch.equal(w, unet_fingerprint) and torch.equal(c, ctx) and torch.equal(n, ctx_null):
                return bank
        bank = build()
        self.entries.append((key, unet_fingerprint, ctx, ctx_null, bank))
        return bank

    @staticmethod
    @torch.no_grad()
    def fingerprint(module: torch.nn.Module) -> torch.Tensor:
        """(n_params,) float64 on the CPU: one sum per parameter tensor, a cheap stand-in for the weights."""
        return torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()


@torch.no_grad()
def _trajectory(
    pair: ModelPair,
    scheduler,
    ctx: torch.Tensor,
    ctx_null: torch.Tensor,
    noise: torch.Tensor,
    taus: torch.Tensor,
    guidance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, eps_cond), each (B, S, C, h, w), along one DDIM run of the original model."""
    scheduler = as_ddim(scheduler)
    noise = noise.to(pair.unet_o.device, pair.unet_o.dtype)
    ac = scheduler.alphas_cumprod.to(noise.device, noise.dtype)
    x = noise * scheduler.init_noise_sigma
    lat, ec = [], []
    for i, tau in enumerate(taus.tolist()):
        t = torch.full((len(x),), tau, device=x.device)
        e, e_c, _ = eps_cfg(pair.eps_original, x, t, ctx, ctx_null, guidance)
        lat.append(x), ec.append(e_c)
        x = ddim_step(x, e, tau, int(taus[i + 1]) if i + 1 < len(taus) else -1, ac)
    return torch.stack(lat, 1), torch.stack(ec, 1)


def jitter_timesteps(
    step: torch.Tensor, steps: int, generator: torch.Generator, taus: torch.Tensor, T: int = 1000
) -> torch.Tensor:
    """A DDPM timestep drawn inside the DDIM interval [tau_step, tau_step + T/steps) for each sample: (B,) long."""
    width = T // steps
    t = taus[step] + torch.randint(width, step.shape, generator=generator)
    return t.clamp(max=T - 1)
