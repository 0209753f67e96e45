"""ItdPatch: the ItD artifact. An SAE, a feature set, tau and a gate threshold, applied by a forward hook on one
text-encoder layer; the model's weights are never touched.

Per token e (B, L, D) at the hooked layer (BOS, position 0, passes through):
    z      = TopK(W_enc (e - b_pre) + b_lat)                                  (eq. 1)
    z^     = tau * z on F_erase, z elsewhere                                  (eq. 7)
    e^_tau = W_dec z^ + b_pre                                                 (eq. 2)
    score  = ||e - e^_tau||^2, gate G = pool(score) > threshold               (eq. 8)
    out    = e^_tau                      (injection "replace": ItD)
           = e + W_dec (z^ - z)          (injection "add_error": keeps the SAE's error term e - W_dec z - b_pre)
    out    = G * out + (1 - G) * e

The hook acts on hidden states only, so soft embeddings injected at the token-embedding module pass through it,
and gradients flow through `out` (the gate decision itself is a hard, non-differentiable switch).

Folder layout: sae.safetensors + sae.json (the SAE, loadable alone) and erasekit.json
({"component": "itd_patch", "method": "itd", layer, features, tau, threshold, ...}).
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
ARTIFACT = "itd_patch"
INFO = "erasekit.json"


@dataclass
class ItdPatch:
    """A trained SAE with the features to turn down. `threshold=None` means no gate (always erase)."""

    sae: TopKSAE
    layer: int
    features: dict[str, list[int]] = field(default_factory=dict)
    tau: float = 0.0
    threshold: float | None = None
    injection: Injection = "add_error"
    pooling: Pooling = "max"
    info: dict = field(default_factory=dict)
    _handle: torch.utils.hooks.RemovableHandle | None = field(default=None, repr=False)
    last_fired: torch.Tensor | None = field(default=None, repr=False)

    @property
    def concepts(self) -> list[str]:
        return list(self.features)

    def erase_indices(self) -> torch.Tensor:
        """F_erase (eq. 6): the union of every concept's features, as a sorted (F,) long tensor."""
        return torch.tensor(sorted(set().union(*self.features.values())), dtype=torch.long)

    def scores(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) hidden states -> (deactivated output (B, L-1, D) before gating, scores (B, L-1)); BOS left out."""
        x = h[:, 1:].to(self.sae.pre_bias.dtype)
        z = self.sae.encode(x)
        f = self.erase_indices().to(x.device)
        delta = (self.tau - 1.0) * z[..., f] @ self.sae.decoder.weight[:, f].T  # W_dec (z^ - z), eq. 7
        x_tau = self.sae.decode(z) + delta  # e^_tau
        score = (x - x_tau).pow(2).sum(-1)  # eq. 8
        return (x_tau if self.injection == "replace" else x + delta), score

    def edit(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) -> (gated output (B, L, D), per-prompt gate decisions (B,) bool)."""
        if not self.features or len(self.erase_indices()) == 0:
            return h, torch.zeros(len(h), dtype=torch.bool, device=h.device)
        out, score = self.scores(h)
        with torch.no_grad():
            if self.threshold is None:
                g = torch.ones_like(score, dtype=torch.bool)
            elif self.pooling == "token":
                g = score > self.threshold
            else:
                g = (pool(score, self.pooling) > self.threshold)[:, None].expand_as(score)
        x = h[:, 1:].to(out.dtype)
        new = torch.where(g[..., None], out, x).to(h.dtype)
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
            "tau": self.tau, "threshold": self.threshold, "injection": self.injection, "pooling": self.pooling,
            **self.info,
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
        sae, _ = TopKSAE.load(folder)
        known = {"component", "method", "layer", "concepts", "features", "tau", "threshold", "injection", "pooling"}
        return cls(
            sae, meta["layer"], {c: list(v) for c, v in meta["features"].items()}, meta["tau"], meta["threshold"],
            meta["injection"], meta["pooling"], {k: v for k, v in meta.items() if k not in known},
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
