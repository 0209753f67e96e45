"""Token attack in the style of UnlearnDiffAtk: k real vocabulary tokens found by optimising a relaxed one-hot
distribution over an allowed vocabulary and projecting it to tokens (argmax).

Each step the forward pass uses the projected tokens (straight-through: the one-hot of the argmax carries the
gradient of the softmax), so the loss that is minimised (eq. 4) is the loss of real tokens, and the result is a
readable prompt that works in any ordinary pipeline.

Search space (`search_space`): the caller's word list (a domain's choice), kept where a word is one token of this
tokenizer; or, by default, UnlearnDiffAtk's: every whole-word token of lower-case ASCII letters in the vocabulary (about
33,000 on CLIP's), so the prompt reads (and re-tokenizes) as words. Special tokens and the concept's own tokens are never
allowed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import CLIPTokenizer

from erasekit.attacks.soft import SuccessCheck, SuccessLatch, XtProvider, attack_loss
from erasekit.diffusion import ModelPair
from erasekit.errors import ErasekitError
from erasekit.text import Slots, token_embedding


class TokenAttackConfig(BaseModel):
    """Token attack options (defaults: a 3-token prefix, 200 Adam steps on the logits)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["prefix_k", "suffix_k", "replace_k"] = "prefix_k"
    k: int = Field(3, ge=1)
    steps: int = Field(200, ge=1)
    lr: float = Field(0.1, gt=0)
    temperature: float = Field(1.0, gt=0)
    select_every: int = Field(10, ge=0)  # keep each prompt's best projected tokens, checked every N steps (0: last)
    select_draws: int = Field(4, ge=1)  # fixed x_t draws the check averages eq. 4 over


def search_space(tokenizer: CLIPTokenizer, vocabulary: list[str] | None, exclude: list[str]) -> list[int]:
    """Allowed token ids (sorted): see the module docstring; `exclude` = words whose tokens are never allowed."""
    banned = set(tokenizer.all_special_ids)
    for text in exclude:
        banned |= set(tokenizer(text, add_special_tokens=False).input_ids)
    if vocabulary is None:
        words = ((t[:-4], i) for t, i in tokenizer.get_vocab().items() if t.endswith("</w>"))
        # ASCII letters only: byte-level pieces of other scripts are no words; lower case: CLIP lowercases every
        # prompt, so an upper-case token would be read back as another one
        ids = {i for w, i in words if w.isascii() and w.isalpha() and w.islower()}
    else:
        pieces = (tokenizer(w, add_special_tokens=False).input_ids for w in vocabulary)
        ids = {t[0] for t in pieces if len(t) == 1}
    allowed = sorted(ids - banned)
    if not allowed:
        raise ErasekitError(
            "the attack's search space is empty: give words that are single tokens of this tokenizer, "
            "or no vocabulary (every whole-word token)"
        )
    return allowed


def space_card(vocabulary: list[str] | None, allowed: list[int]) -> dict:
    """Which search space an attack used: its name and its size in tokens."""
    name = "tokenizer whole-word tokens" if vocabulary is None else f"given word list ({len(vocabulary)} words)"
    return {"name": name, "size": len(allowed)}


def optimize_tokens(
    pair: ModelPair,
    slots: Slots,
    allowed: list[int],
    provider: XtProvider,
    config: TokenAttackConfig,
    generator: torch.Generator,
    check: SuccessCheck | None = None,
    check_every: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids (B, k) from `allowed`, per-prompt loss (B,) of those tokens).

    With `select_every` > 0 the projected tokens are scored every that many steps (and at the end) on the same
    `select_draws` x_t draws, and each prompt keeps its lowest-scoring tokens; the loss returned is that score.
    Otherwise the last step's tokens and loss are returned. With `check` (it receives token ids (B, k) from
    `allowed`), a prompt whose projected tokens succeeded at a check keeps them (`SuccessLatch`); the run stops
    early once every prompt succeeded.
    """
    vocab = torch.tensor(allowed)
    latch = SuccessLatch(check, check_every)
    table = token_embedding(pair.text_encoder).weight.detach()[vocab]  # (V_a, D)
    b, k = slots.positions.shape
    logits = (0.01 * torch.randn(b, k, len(allowed), generator=generator)).to(table.device).requires_grad_(True)
    adam = torch.optim.Adam([logits], lr=config.lr)
    fixed = [
        provider(torch.Generator().manual_seed(i)) for i in range(config.select_draws if config.select_every else 0)
    ]
    best = torch.zeros(b, k, dtype=torch.long)
    best_loss = torch.full((b,), float("inf"))
    loss = torch.zeros(b)
    for step in range(1, config.steps + 1):
        soft = torch.softmax(logits / config.temperature, -1)  # (B, k, V_a) relaxed one-hot
        hard = torch.nn.functional.one_hot(soft.argmax(-1), len(allowed)).to(soft.dtype)
        onehot = hard + soft - soft.detach()  # forward: real tokens; backward: the relaxation's gradient
        x, t, target = provider(generator)
        loss = attack_loss(pair, slots, onehot @ table, x, t, target)
        (logits.grad,) = torch.autograd.grad(loss.sum(), logits)
        adam.step()
        if config.select_every and (step % config.select_every == 0 or step == config.steps):
            current = logits.detach().argmax(-1)
            with torch.no_grad():
                score = sum(attack_loss(pair, slots, table[current], *draw) for draw in fixed).cpu() / len(fixed)
            better = score < best_loss
            best[better], best_loss[better] = current.cpu()[better], score[better]
        if latch.due(step):
            latch(vocab[logits.detach().argmax(-1).cpu()])
        if latch.all_done:
            break
    if not config.select_every:
        best, best_loss = logits.detach().argmax(-1).cpu(), loss.detach().cpu()
    return latch.finish(vocab[best]), best_loss
