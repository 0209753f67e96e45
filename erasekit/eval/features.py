"""Image and text features for FID and CLIP score, with a card naming the model that made them.

    ClipEncoder.image_features(images)   (N, 3, H, W) in [0, 1] -> (N, D) vision pooled features (FID)
    ClipEncoder.clip_score(images, prompts)  -> (N,) cosine of projected image and text embeddings
    InceptionFeatures(images)            (N, 3, H, W) in [0, 1] -> (N, 2048) pool3 features (torchmetrics)

A CLIP folder without preprocessor_config.json (the shapes world's own) takes pixel_values in [-1, 1]. A Hugging
Face CLIP folder (with preprocessor_config.json) is preprocessed the standard way (bicubic resize, centre crop,
mean/std). Nothing here downloads: every model is a local folder or file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from erasekit.errors import ErasekitError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipEncoder:
    """A transformers CLIPModel + tokenizer from a local folder or a hub id (the domain names which)."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        self.folder = Path(folder)
        try:
            self.model = CLIPModel.from_pretrained(str(folder), dtype=torch.float32).to(device).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(str(folder))
        except OSError:
            raise ErasekitError(
                f"no CLIP model at {folder}: pass --clip-model a local folder holding a transformers CLIPModel "
                "(save one where there is network; erasekit never downloads in tests)"
            ) from None
        self.device = torch.device(device)
        pre = self.folder / "preprocessor_config.json"
        cfg = json.loads(pre.read_text()) if pre.is_file() else None
        self.size = self.model.config.vision_config.image_size
        if cfg is None:  # the world's convention: [-1, 1], no crop
            self.mean, self.std, self.crop = (0.5,) * 3, (0.5,) * 3, False
        else:
            self.mean = tuple(cfg.get("image_mean", OPENAI_MEAN))
            self.std = tuple(cfg.get("image_std", OPENAI_STD))
            self.crop = True

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, S, S) normalised pixel_values."""
        x = images.to(self.device, torch.float32)
        if self.crop:
            h, w = x.shape[-2:]
            scale = self.size / min(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bicubic", align_corners=False)
            top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
            x = x[..., top : top + self.size, left : left + self.size].clamp(0, 1)
        elif x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, device=self.device)[:, None, None]
        std = torch.tensor(self.std, device=self.device)[:, None, None]
        return (x - mean) / std

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, D_vision) pooled vision features, the FID feature space."""
        out = [self.model.vision_model(pixel_values=self._pixels(b)).pooler_output for b in images.split(batch_size)]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def clip_score(self, images: torch.Tensor, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(N,) cosine similarity in [-1, 1] between each image and its prompt (projected embeddings)."""
        if len(prompts) != len(images):
            raise ErasekitError(f"{len(prompts)} prompts for {len(images)} images: give one prompt per image")
        scores = []
        for i in range(0, len(images), batch_size):
            pix = self._pixels(images[i : i + batch_size])
            img = self.model.visual_projection(self.model.vision_model(pixel_values=pix).pooler_output)
            tok = self.tokenizer(prompts[i : i + batch_size], padding=True, truncation=True, return_tensors="pt").to(
                self.device
            )
            txt = self.model.text_projection(self.model.text_model(**tok).pooler_output)
            scores.append(F.cosine_similarity(img, txt, dim=-1))
        return torch.cat(scores).cpu()

    def card(self) -> dict:
        return {
            "name": "CLIP" if self.crop else "shapes-world CLIP",
            "weights": str(self.folder),
            "image_size": self.size,
            "features": f"vision pooled output ({self.model.config.vision_config.hidden_size}-d)",
            "clip_score_scale": "cosine similarity in [-1, 1] (not x100, not clipped at 0)",
        }


class InceptionFeatures:
    """FID's Inception-v3 pool3 features through torchmetrics, from a weights file the user already has."""

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu") -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise ErasekitError(
                f"Inception weights {weights} not found: download pt_inception-2015-12-05 where there is network "
                "and pass the file (erasekit never downloads)"
            )
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as e:
            raise ErasekitError("Inception FID needs torchmetrics: pip install 'torchmetrics[image]'") from e
        self.weights = weights
        self.device = torch.device(device)
        self.model = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights)
        ).to(self.device)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        out = []
        for b in images.split(batch_size):
            u8 = (b.clamp(0, 1) * 255).round().to(self.device, torch.uint8)
            out.append(self.model(u8).reshape(len(b), -1).float())
        return torch.cat(out).cpu()

    def card(self) -> dict:
        return {"name": "Inception-v3 (torchmetrics, FID weights)", "weights": str(self.weights), "features": "2048-d"}
