"""K-sparse (TopK) autoencoder on text-encoder activations, and its training loop.

    encode:  z = TopK(W_enc (e - b_pre) + b_lat)          (ItD eq. 1; ReLU after TopK)
    decode:  e_hat = W_dec z + b_pre                       (ItD eq. 2)
    loss:    ||e - e_hat||^2 / Var(e) + alpha * L_aux      (ItD eq. 3; L_aux = AuxK on dead latents)

Training practice from the TopK SAE literature: b_pre starts at the geometric median of the activations,
W_enc starts as W_dec^T, decoder columns are kept at unit norm (the gradient part along each column is removed
before the step), and a latent is dead when it has not fired for `dead_tokens` training tokens.
Parameter names match the published ItD / OpenAI checkpoints: encoder.weight (W, D), decoder.weight (D, W),
pre_bias (D,), latent_bias (W,).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import nn

from erasekit.checkpoint import load_checkpoint, save_checkpoint
from erasekit.errors import ErasekitError

WEIGHTS = "sae.safetensors"
CONFIG = "sae.json"


class TopKSAE(nn.Module):
    """TopK sparse autoencoder with `width` latents over `d_in`-dimensional inputs."""

    def __init__(self, d_in: int, width: int, k: int) -> None:
        super().__init__()
        if not 0 < k <= width:
            raise ErasekitError(f"SAE k={k} must be between 1 and the width {width}: lower k or widen the SAE")
        self.d_in, self.width, self.k = d_in, width, k
        self.encoder = nn.Linear(d_in, width, bias=False)
        self.decoder = nn.Linear(width, d_in, bias=False)
        self.pre_bias = nn.Parameter(torch.zeros(d_in))
        self.latent_bias = nn.Parameter(torch.zeros(width))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., W) latent pre-activations W_enc (x - b_pre) + b_lat."""
        return self.encoder(x - self.pre_bias) + self.latent_bias

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., W) dense codes with k non-zeros per row (eq. 1)."""
        return topk_codes(self.pre_acts(x), self.k)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., W) -> (..., D) reconstruction (eq. 2)."""
        return self.decoder(z) + self.pre_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D) -> (reconstruction (..., D), codes (..., W))."""
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale every decoder column (feature vector f_rho) to unit norm."""
        self.decoder.weight /= self.decoder.weight.norm(dim=0, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Remove from each decoder column's gradient its component along that column (unit-norm constraint)."""
        w, g = self.decoder.weight, self.decoder.weight.grad
        if g is not None:
            g -= (g * w).sum(0, keepdim=True) * w

    def save(self, folder: str | Path, extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().float().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))
        meta = {"d_in": self.d_in, "width": self.width, "k": self.k, **(extra or {})}
        (folder / CONFIG).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> tuple[TopKSAE, dict]:
        """(SAE, its JSON metadata) from a folder written by `save`."""
        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise ErasekitError(f"no SAE in {folder} (expected {CONFIG} and {WEIGHTS}): run `erasekit sae train`")
        meta = json.loads((folder / CONFIG).read_text())
        sae = cls(meta["d_in"], meta["width"], meta["k"])
        sae.load_state_dict(load_file(str(folder / WEIGHTS)))
        return sae.eval(), meta

    @classmethod
    def from_published(cls, folder: str | Path) -> tuple[TopKSAE, dict]:
        """(SAE, config) from a published ItD checkpoint: config.json + a torch state dict file.

        The state dict (encoder.weight, decoder.weight, pre_bias, latent_bias) is read with
        torch.load(weights_only=True), which refuses anything but tensors and plain containers.
        """
        folder = Path(folder)
        cfg_path = folder / "config.json"
        files = sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin")) if folder.is_dir() else []
        if not cfg_path.is_file() or not files:
            raise ErasekitError(f"{folder} is not a published SAE checkpoint (needs config.json and a .pt/.pth file)")
        cfg = json.loads(cfg_path.read_text())
        try:
            state = torch.load(files[0], map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with code in it, or a broken file
            raise ErasekitError(
                f"cannot read {files[0]} as a plain state dict ({type(e).__name__}): re-save it"
            ) from None
        state = state.get("state_dict", state)
        missing = {"encoder.weight", "decoder.weight", "pre_bias", "latent_bias"} - set(state)
        if missing:
            raise ErasekitError(f"{files[0]} lacks {sorted(missing)}: it is not an ItD/OpenAI-format TopK SAE")
        width, d_in = state["encoder.weight"].shape
        sae = cls(d_in, width, int(cfg.get("k", 32)))
        sae.load_state_dict({k: state[k].float() for k in sae.state_dict()})
        return sae.eval(), cfg


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """(..., W) pre-activations -> (..., W) with the k largest kept (ReLU'd), the rest zero."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


@torch.no_grad()
def geometric_median(x: torch.Tensor, iters: int = 50, eps: float = 1e-6) -> torch.Tensor:
    """(N, D) -> (D,) Weiszfeld iterations for the point minimising the summed distances."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        m_new = (w[:, None] * x).sum(0) / w.sum()
        if (m_new - m).norm() < eps * (1 + m.norm()):
            return m_new
        m = m_new
    return m


def normalized_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error over the batch's variance: sum||x - x_hat||^2 / sum||x - mean(x)||^2 (the FVU)."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


class SaeTrainConfig(BaseModel):
    """Options of SAE training (defaults suit the shapes world's 64-wide encoder)."""

    width: int = Field(512, ge=1, description="number of latents (dictionary size)")
    k: int = Field(8, ge=1, description="active latents per token")
    aux_k: int = Field(64, ge=1, description="dead latents used by the AuxK loss")
    aux_coef: float = Field(1 / 32, ge=0, description="alpha, the AuxK loss weight")
    lr: float = Field(1e-3, gt=0)
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(1024, ge=1, description="tokens per step")
    dead_tokens: int = Field(200_000, ge=1, description="a latent that fired on none of this many tokens is dead")
    checkpoint_every: int = Field(500, ge=1, description="steps between resumable checkpoints")
    seed: int = 0


def aux_loss(sae: TopKSAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor, aux_k: int) -> torch.Tensor:
    """AuxK: reconstruct the residual (N, D) from the top-`aux_k` dead latents' pre-activations (N, W)."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    z_aux = topk_codes(pre.masked_fill(~dead, float("-inf")), min(aux_k, n_dead))
    return normalized_mse(residual, sae.decoder(z_aux))


def train_sae(
    acts: torch.Tensor,
    cfg: SaeTrainConfig,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[TopKSAE, dict]:
    """Train a TopK SAE on (N, D) activations; returns (SAE, stats with fvu, dead latents and steps).

    With `checkpoint_dir`, the state is saved every `cfg.checkpoint_every` steps and training resumes from it.
    """
    if acts.ndim != 2 or len(acts) < 2:
        raise ErasekitError("SAE training needs a (tokens, dim) activation matrix with at least 2 rows")
    acts = acts.float()
    torch.manual_seed(cfg.seed)
    sae = TopKSAE(acts.shape[1], cfg.width, cfg.k)
    sae.decoder.weight.data = torch.randn(acts.shape[1], cfg.width)
    sae.normalize_decoder()
    sae.encoder.weight.data = sae.decoder.weight.data.T.clone()
    sae.pre_bias.data = geometric_median(acts[torch.randperm(len(acts))[:20_000]])
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    since_fired = torch.zeros(cfg.width, dtype=torch.long)
    start = 0
    if checkpoint_dir is not None and (state := load_checkpoint(checkpoint_dir, {"sae": sae}, opt)) is not None:
        start, extra = state
        since_fired = torch.tensor(extra["since_fired"], dtype=torch.long)
    g = torch.Generator().manual_seed(cfg.seed)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("training SAE", total=cfg.steps, completed=start)
        for step in range(start, cfg.steps):
            g.manual_seed(cfg.seed * 1_000_003 + step)
            x = acts[torch.randint(len(acts), (cfg.batch_size,), generator=g)]
            pre = sae.pre_acts(x)
            z = topk_codes(pre, cfg.k)
            x_hat = sae.decode(z)
            fired = (z > 0).any(0)
            since_fired = torch.where(fired, 0, since_fired + len(x))
            dead = since_fired >= cfg.dead_tokens
            loss = normalized_mse(x, x_hat) + cfg.aux_coef * aux_loss(sae, pre, (x - x_hat).detach(), dead, cfg.aux_k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_grads()
            opt.step()
            sae.normalize_decoder()
            bar.update(task, advance=1)
            if checkpoint_dir is not None and (step + 1) % cfg.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir, {"sae": sae}, opt, step + 1, {"since_fired": since_fired.tolist()})
    sae.eval()
    return sae, {"fvu": fvu(sae, acts), "dead_latents": int((since_fired >= cfg.dead_tokens).sum()), "steps": cfg.steps}


@torch.no_grad()
def fvu(sae: TopKSAE, acts: torch.Tensor, batch: int = 8192) -> float:
    """Fraction of variance unexplained over all of (N, D) `acts`."""
    err = sum(float((x - sae(x)[0]).pow(2).sum()) for x in acts.float().split(batch))
    return err / float((acts.float() - acts.float().mean(0)).pow(2).sum().clamp_min(1e-12))
