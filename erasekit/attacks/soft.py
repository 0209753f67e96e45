"""Soft prompt attack (continuous, white-box): k adversarial embeddings that make the changed model's noise
prediction match the original model's on the concept prompt (eq. 4 of the method notes):

    minimize_delta  || eps_theta(x_t | c + delta) - eps_o(x_t | c) ||^2                 (eq. 4)

Optimisers: "adam" (PGD-style: Adam on the embeddings), "sign" (FGSM, eq. 7: delta <- delta - alpha sign(grad),
`steps` = 1 is the single step of eq. 7), "signed_adam" (Adam fed the gradient's sign, the AdvUnlearn code's
`fast_at`). Prompts are attacked in a batch, each with its own embeddings (B, k, D) and its own loss term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from erasekit.diffusion import ModelPair
from erasekit.text import Slots, encode_injected

# (generator) -> (x_t (B, C, h, w), t (B,), target eps_o(x_t|c) (B, C, h, w)), one row per attacked prompt
XtProvider = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
# (candidates (n, k, ...), rows (n,) long: which of the B attacked prompts they belong to) -> (n,) bool: did the
# image drawn with each candidate show the concept (the detector's verdict)?
SuccessCheck = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SuccessLatch:
    """UnlearnDiffAtk's early stop: every `every` steps the current candidates are judged by `check`, and a prompt
    keeps the first candidate that succeeded (later steps may wander off it) and is not judged again. Without a
    check it does nothing."""

    def __init__(self, check: SuccessCheck | None, every: int) -> None:
        self.check, self.every = (check, every) if check is not None and every > 0 else (None, 0)
        self.saved: torch.Tensor | None = None
        self.done: torch.Tensor | None = None

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based) is a check step."""
        return self.check is not None and step % self.every == 0

    def __call__(self, candidate: torch.Tensor) -> None:
        """Judge `candidate` (call it on the steps that are `due`)."""
        candidate = candidate.detach().cpu()
        if self.saved is None:
            self.saved, self.done = candidate.clone(), torch.zeros(len(candidate), dtype=torch.bool)
        todo = (~self.done).nonzero().squeeze(1)
        hit = todo[self.check(candidate[todo], todo).cpu()]
        self.saved[hit], self.done[hit] = candidate[hit], True

    @property
    def all_done(self) -> bool:
        return self.done is not None and bool(self.done.all())

    def finish(self, candidate: torch.Tensor) -> torch.Tensor:
        """`candidate` with the rows that succeeded at a check replaced by their successful candidate."""
        if self.done is None:
            return candidate
        out = candidate.detach().clone()
        out[self.done.to(out.device)] = self.saved[self.done].to(out.device, out.dtype)
        return out


class SoftAttackConfig(BaseModel):
    """Soft prompt attack options (defaults: a 3-token prefix, 200 Adam steps)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["prefix_k", "suffix_k", "replace_k", "add"] = "prefix_k"
    k: int = Field(3, ge=1)
    steps: int = Field(200, ge=1)
    lr: float = Field(1e-2, gt=0)
    optimizer: Literal["adam", "sign", "signed_adam"] = "adam"


def attack_loss(
    pair: ModelPair, slots: Slots, emb: torch.Tensor, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Eq. 4 per prompt: (B,). Summing it keeps each prompt's gradient its own."""
    ctx = encode_injected(pair.text_encoder, slots, emb)
    return ((pair.eps(x, t, ctx) - target) ** 2).flatten(1).mean(1)  # eq. 4


def optimize_embeddings(
    pair: ModelPair,
    slots: Slots,
    init: torch.Tensor,
    provider: XtProvider,
    config: SoftAttackConfig,
    generator: torch.Generator,
    check: SuccessCheck | None = None,
    check_every: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (B, k, D) or (k, D) like `init`, per-prompt loss of the last step (B,)).

    Gradients go to the embeddings only (torch.autograd.grad), so a model being trained keeps its .grad intact.
    With `check` (batched embeddings only), see `SuccessLatch`; the run stops early once every prompt succeeded.
    """
    emb = init.detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([emb], lr=config.lr) if config.optimizer != "sign" else None
    loss = torch.zeros(len(slots.ids))
    latch = SuccessLatch(check, check_every)
    for step in range(1, config.steps + 1):
        x, t, target = provider(generator)
        loss = attack_loss(pair, slots, emb, x, t, target)
        (grad,) = torch.autograd.grad(loss.sum(), emb)
        if adam is None:
            with torch.no_grad():
                emb -= config.lr * grad.sign()  # eq. 7
        else:
            emb.grad = grad.sign() if config.optimizer == "signed_adam" else grad
            adam.step()
        if latch.due(step):
            latch(emb)
        if latch.all_done:
            break
    return latch.finish(emb), loss.detach()
