"""The zero-shot gate: pooling of per-token scores, threshold calibration, and the gate's accuracy and ROC AUC.

The score of a token is the reconstruction error of its *deactivated* encoding, ||e - e^_tau||^2 (ItD eq. 8).
A prompt with the concept has the selected features active, so turning them down moves the reconstruction away
from e and the error grows; a prompt without it keeps the SAE's ordinary error. G(e) = 1 (erase) when the pooled
score exceeds the threshold.
"""

from __future__ import annotations

from typing import Literal

import torch

Pooling = Literal["token", "max", "mean"]


def pool(scores: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, T) per-token scores -> (B,) per-prompt scores ('token' gates per token; its prompt score is the max)."""
    return scores.mean(1) if pooling == "mean" else scores.amax(1)


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = pos.double().flatten(), neg.double().flatten()
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def calibrate(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """The threshold with the best balanced accuracy on (P,) positive and (N,) negative prompt scores.

    Candidates lie halfway (geometrically, scores being squared errors) between neighbouring sorted scores.
    """
    s = torch.cat([pos, neg]).double().sort().values.clamp_min(1e-12)
    cands = torch.cat([s[:1] * 0.5, (s[1:] * s[:-1]).sqrt(), s[-1:] * 2.0])
    tpr = (pos.double()[None, :] > cands[:, None]).double().mean(1)
    tnr = (neg.double()[None, :] <= cands[:, None]).double().mean(1)
    best = (tpr + tnr).max()
    ok = torch.nonzero((tpr + tnr) >= best - 1e-12).flatten()
    return float(cands[ok[len(ok) // 2]])


def gate_report(pos: torch.Tensor, neg: torch.Tensor, threshold: float) -> dict[str, float]:
    """Accuracy, ROC AUC and firing rates of the gate on (P,) prompts with the concept and (N,) without."""
    fired_pos, fired_neg = (pos > threshold).double(), (neg > threshold).double()
    correct = float(fired_pos.sum() + (1 - fired_neg).sum())
    return {
        "accuracy": correct / (len(pos) + len(neg)),
        "auc": roc_auc(pos, neg),
        "fired_on_target": float(fired_pos.mean()),
        "fired_on_others": float(fired_neg.mean()),
        "n_target": len(pos),
        "n_others": len(neg),
    }
