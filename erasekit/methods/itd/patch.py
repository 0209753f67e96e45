"""ItdPatch: the ItD artifact. An SAE, per-concept feature sets, tau and per-concept gate thresholds, applied by a
forward hook on one text-encoder layer; the model's weights are never touched.

Per token e (B, L, D) at the hooked layer (BOS, position 0, passes through), for each concept j with features F_j:
    z          = TopK(W_enc (e - b_pre) + b_lat)                              (eq. 1)
    z^_j       = tau * z on F_j, z elsewhere                                  (eq. 7, one concept)
    e^_j       = W_dec z^_j + b_pre                                           (eq. 2)
    score_j    = ||e - e^_j||^2                  (score "error": eq. 8, one zero-shot classifier per concept)
               = ||e - e^_j||^2 - ||e - e^||^2   (score "increase": the error the deactivation adds)
    G_j        = pool(score_j) > threshold_j
    z^         = tau * z on the union of F_j over the concepts whose gate fired (eq. 6-7)
    out        = W_dec z^ + b_pre                (injection "replace": ItD)
               = e + W_dec (z^ - z)              (injection "add_error": keeps the SAE's error term, as SAeUron)
    out        = e where no gate fired

A concept's own threshold keeps one concept's score scale from deciding for another's (a single pooled threshold
over the union F_erase fires on prompts without either concept). The "increase" score takes out the SAE's own
reconstruction error e - e^, which grows on phrasings unlike the calibration prompts and would push every "error"
score above a threshold calibrated on training templates (docs/history.md has the measurements). With
`thresholds=None` every token is erased.

The hook acts on hidden states only, so soft embeddings injected at the token-embedding module pass through it,
and gradients flow through `out` (the gate decision itself is a hard, non-differentiable switch).

Folder layout: sae.safetensors + sae.json (the SAE, loadable alone) and erasekit.json
({"component": "itd_patch", "method": "itd", layer, features, tau, thresholds, ...}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from erasekit.errors import ErasekitError
from erasekit.methods.itd.activations import encoder_layer, hidden_of
from erasekit.methods.itd.gate import Pooling, pool
from erasekit.methods.itd.sae import TopKSAE

Injection = Literal["replace", "add_error"]
Score = Literal["error", "increase"]
ARTIFACT = "itd_patch"
INFO = "erasekit.json"


@dataclass
class ItdPatch:
    """A trained SAE with the features to turn down per concept. `thresholds=None` means no gate (always erase)."""

    sae: TopKSAE
    layer: int
    features: dict[str, list[int]] = field(default_factory=dict)
    tau: float = 0.0
    thresholds: dict[str, float] | None = None
    injection: Injection = "add_error"
    pooling: Pooling = "max"
    score: Score = "increase"
    info: dict = field(default_factory=dict)
    _handle: torch.utils.hooks.RemovableHandle | None = field(default=None, repr=False)
    last_fired: torch.Tensor | None = field(default=None, repr=False)

    @property
    def concepts(self) -> list[str]:
        return list(self.features)

    def erase_indices(self) -> torch.Tensor:
        """F_erase (eq. 6): the union of every concept's features, as a sorted (F,) long tensor."""
        return torch.tensor(sorted(set().union(*self.features.values())), dtype=torch.long)

    def masks(self) -> torch.Tensor:
        """(C, W) float: row j is 1 on concept j's features F_j."""
        m = torch.zeros(len(self.features), self.sae.width, device=self.sae.pre_bias.device)
        for j, f in enumerate(self.features.values()):
            m[j, f] = 1.0
        return m

    def _parts(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, D) -> e (B, T, D), z (B, T, W), SAE error e - W_dec z - b_pre (B, T, D), scores (B, T, C); T = L-1."""
        x = h[:, 1:].to(self.sae.pre_bias.dtype)
        z = self.sae.encode(x)
        err = x - self.sae.decode(z)
        zf = z[..., None, :] * self.masks()  # (B, T, C, W): each concept's own features
        delta = (self.tau - 1.0) * self.sae.decoder(zf)  # W_dec (z^_j - z), eq. 7
        score = (err[..., None, :] - delta).pow(2).sum(-1)  # eq. 8: ||e - e^_j||^2
        return x, z, err, score - err.pow(2).sum(-1, keepdim=True) if self.score == "increase" else score

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states -> (B, L-1, C) per-token, per-concept gate scores (eq. 8); BOS left out."""
        return self._parts(h)[3]

    def gates(self, score: torch.Tensor) -> torch.Tensor:
        """(B, T, C) scores -> (B, T, C) bool: G_j per token ('token' pooling) or per prompt (others, broadcast)."""
        if self.thresholds is None:
            return torch.ones_like(score, dtype=torch.bool)
        thr = score.new_tensor([self.thresholds[c] for c in self.features])
        if self.pooling == "token":
            return score > thr
        return (pool(score, self.pooling) > thr)[:, None].expand_as(score)

    def edit(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) -> (gated output (B, L, D), per-prompt, per-concept gate decisions (B, C) bool)."""
        if not self.features or len(self.erase_indices()) == 0:
            return h, torch.zeros(len(h), len(self.features), dtype=torch.bool, device=h.device)
        x, z, err, score = self._parts(h)
        with torch.no_grad():
            g = self.gates(score)
            keep = (g.to(z.dtype) @ self.masks()).clamp(max=1.0)  # (B, T, W): union of the fired concepts' F_j
        z_hat = z + (self.tau - 1.0) * z * keep  # eq. 7 on F_erase of the fired concepts
        out = self.sae.decode(z_hat) + (err if self.injection == "add_error" else 0.0)
        new = torch.where(g.any(-1, keepdim=True), out, x).to(h.dtype)
        return torch.cat([h[:, :1], new], 1), g.any(1)

    def _hook(self, _module, _args, output):
        h, fired = self.edit(hidden_of(output))
        self.last_fired = fired.detach().cpu()
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def attach(self, pipe) -> ItdPatch:
        """Hook the patch onto `pipe.text_encoder` (moves the SAE to its device); returns self."""
        self.detach()
        te = pipe.text_encoder
        if te.config.hidden_size != self.sae.d_in:
            raise ErasekitError(
                f"this ItD patch was built for a {self.sae.d_in}-wide text encoder, but the model's is "
                f"{te.config.hidden_size} wide: build the patch on this model"
            )
        self.sae.to(te.device).requires_grad_(False)
        self._handle = encoder_layer(te, self.layer).register_forward_hook(self._hook)
        return self

    def detach(self) -> None:
        """Remove the hook (the pipeline is exactly as before attach)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.sae.save(folder, {"layer": self.layer})
        meta = {
            "component": ARTIFACT, "method": "itd", "layer": self.layer, "concepts": self.concepts, "features": self.features,
            "tau": self.tau, "thresholds": self.thresholds, "injection": self.injection, "pooling": self.pooling,
            "score": self.score, **self.info,
        }  # fmt: skip
        (folder / INFO).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ItdPatch:
        folder = Path(folder)
        path = folder / INFO
        meta = json.loads(path.read_text()) if path.is_file() else {}
        if meta.get("component") != ARTIFACT:
            raise ErasekitError(
                f"{folder} is not an ItD patch (no {INFO} with component '{ARTIFACT}'): pass the -o folder of `erasekit erase --method itd`"
            )
        if "thresholds" not in meta:
            raise ErasekitError(f"{folder} is an ItD patch from before per-concept gate thresholds: build it again")
        sae, _ = TopKSAE.load(folder)
        known = {
            "component",
            "method",
            "layer",
            "concepts",
            "features",
            "tau",
            "thresholds",
            "injection",
            "pooling",
            "score",
        }
        return cls(
            sae, meta["layer"], {c: list(v) for c, v in meta["features"].items()}, meta["tau"], meta["thresholds"],
            meta["injection"], meta["pooling"], meta["score"], {k: v for k, v in meta.items() if k not in known},
        )  # fmt: skip

    @classmethod
    def from_published(cls, folder: str | Path, layer: int | None = None) -> ItdPatch:
        """A patch around a published ItD SAE (config.json + state dict), with no features selected yet.

        `layer` defaults to config.json's "layer"; select features with `erasekit.methods.itd.build_patch`.
        """
        sae, cfg = TopKSAE.from_published(folder)
        layer = layer if layer is not None else cfg.get("layer")
        if layer is None:
            raise ErasekitError(
                f"{folder}/config.json names no layer: pass the text-encoder layer the SAE was trained on"
            )
        return cls(sae, int(layer), info={"source": str(folder)})
