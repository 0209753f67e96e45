"""Feature selection: which SAE latents make up a concept, and which of them are specific to it.

s_C^rho  = max_h s_h^rho over the concept's tokens h (BOS left out), averaged over its prompts
F_C      = indices of the top-K_sel s_C^rho                                 (ItD eq. 4)
F^_tar   = F_tar minus the union of F_Cr over retain concepts Cr            (ItD eq. 5)
F_erase  = union of F^_tar over the target concepts                         (ItD eq. 6)

rule "contrast" (not in the paper) instead ranks latents by s_C - max_Cr s_Cr and keeps the top-K_sel with a
positive margin: a latent strong for the target but also among a retain concept's top-K_sel is kept when the
target uses it much more (the set difference of eq. 5 drops it).
"""

from __future__ import annotations

from typing import Literal

import torch

from erasekit.methods.itd.sae import TopKSAE

Rule = Literal["paper", "contrast"]


@torch.no_grad()
def concept_strength(sae: TopKSAE, acts: torch.Tensor) -> torch.Tensor:
    """(B, L, D) activations of a concept's prompts (BOS included at position 0) -> (W,) s_C."""
    z = sae.encode(acts[:, 1:].float())  # (B, L-1, W)
    return z.amax(1).mean(0)


def top_features(strength: torch.Tensor, k_sel: int) -> set[int]:
    """F_C: the k_sel latents with the largest strength (eq. 4); latents that never fire are left out."""
    vals, idx = strength.topk(min(k_sel, len(strength)))
    return {int(i) for i, v in zip(idx, vals, strict=True) if v > 0}


def specific_features(target: torch.Tensor, retains: list[torch.Tensor], k_sel: int) -> set[int]:
    """F^_tar = F_tar minus the union of the retain concepts' F_Cr (eq. 5); strengths are (W,) each."""
    shared: set[int] = set().union(*(top_features(r, k_sel) for r in retains)) if retains else set()
    return top_features(target, k_sel) - shared


def contrast_features(target: torch.Tensor, retains: list[torch.Tensor], k_sel: int) -> set[int]:
    """The k_sel latents with the largest positive margin s_C - max over retain concepts of s_Cr."""
    margin = target - torch.stack(retains).amax(0) if retains else target
    return top_features(margin.clamp_min(0), k_sel)


def erase_set(
    targets: dict[str, torch.Tensor], retains: dict[str, list[torch.Tensor]], k_sel: int, rule: Rule = "paper"
) -> dict[str, list[int]]:
    """Per target concept its sorted F^_tar against its own retain strengths; F_erase (eq. 6) is the union."""
    pick = specific_features if rule == "paper" else contrast_features
    return {c: sorted(pick(s, retains[c], k_sel)) for c, s in targets.items()}
