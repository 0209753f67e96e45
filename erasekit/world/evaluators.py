"""The world's evaluator models: an attribute classifier and a contrastive image-text model (its "CLIP").

ShapeClassifier   (B, 3, 32, 32) in [-1, 1] -> logits {"shape": (B, 5), "colour": (B, 6), "background": (B, 3)}
world CLIP        transformers.CLIPModel at miniature size (ViT patch 4 on 32x32, text = the world's tokenizer)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

from erasekit.world.render import BACKGROUND_NAMES, COLOUR_NAMES, SHAPES
from erasekit.world.tokenizer import MAX_LENGTH

HEADS: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": COLOUR_NAMES, "background": BACKGROUND_NAMES}


class ShapeClassifier(nn.Module):
    """A small CNN with one linear head per attribute."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.width = width
        self.body = nn.Sequential(
            block(3, w), block(w, w), nn.MaxPool2d(2),  # 16x16
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
            block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, len(v)) for k, v in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(images)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class indices per attribute, each (B,)."""
        return {k: v.argmax(-1) for k, v in self(images).items()}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.half().contiguous() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"width": self.width, "heads": HEADS}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> ShapeClassifier:
        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        model = cls(cfg["width"])
        model.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
        return model.eval()


def make_world_clip(tokenizer: CLIPTokenizer, dim: int = 64) -> CLIPModel:
    """A miniature CLIPModel for 32x32 images and the world's tokenizer."""
    text = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=3, num_attention_heads=4,
        image_size=32, patch_size=4, num_channels=3,
    )  # fmt: skip
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=dim))
