"""Test helpers for Stable Diffusion: the SD v1.4-shaped tiny pipeline and tiny random detector models.

Plain functions (conftest.py wraps them in fixtures); each writes a folder in diffusers / transformers layout and
returns it, and reuses a folder it already wrote.

    build_tiny_sd(folder)                      SD v1.4's structure at tiny widths (erasekit.skeleton), 64x64 images
    build_tiny_resnet(folder, winner=None)     ResNet with 1,000 ImageNet labels; `winner` = a class always top-1
    build_tiny_clip(folder, favour=None)       CLIPModel + the real CLIP tokenizer; `favour` = a prompt every image
                                               matches best
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    ConvNextImageProcessor,
    ResNetConfig,
    ResNetForImageClassification,
)

from erasekit.eval.hf_detectors import IMAGENET_CLASSES, imagenet_concepts
from erasekit.skeleton import MAX_LENGTH, VOCAB_SIZE, build_sd_pipeline, clip_tokenizer

IMAGE_SIZE = 32  # the tiny detectors' input size: small enough for milliseconds per batch
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """The tiny SD v1.4-shaped pipeline folder (built once per folder; a second call reuses it)."""
    out = Path(folder)
    if not (out / "model_index.json").is_file():
        build_sd_pipeline(out, "tiny", seed)
    return out


def build_tiny_resnet(folder: str | Path, winner: int | None = None, seed: int = 0) -> Path:
    """A tiny ResNetForImageClassification with ImageNet-1k's 1,000 outputs and a ConvNeXt-style processor.

    id2label carries the real names of the shipped concepts' classes and placeholders elsewhere. `winner`: the
    classifier's weights are zeroed and its bias makes that class the top-1 for every image.
    """
    out = Path(folder)
    if (out / "config.json").is_file():
        return out
    names = {i: label for classes in imagenet_concepts().values() for i, label in classes.items()}
    id2label = {i: names.get(i, f"LABEL_{i}") for i in range(IMAGENET_CLASSES)}
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1], layer_type="basic", id2label=id2label
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNetForImageClassification(config).eval()
    if winner is not None:
        head = model.classifier[-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[winner] = 10.0
    model.save_pretrained(out)
    processor = ConvNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_pct=0.875, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    )
    processor.save_pretrained(out)
    return out


def build_tiny_clip(folder: str | Path, favour: str | None = None, seed: int = 0) -> Path:
    """A tiny CLIPModel with the real 49,408-token tokenizer and a CLIP image processor at 32x32.

    `favour`: the vision tower's final norm outputs a constant and the visual projection maps it onto the text
    embedding of that prompt, so every image matches `favour` best (cosine 1).
    """
    out = Path(folder)
    if (out / "config.json").is_file():
        return out
    config = CLIPConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": MAX_LENGTH,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    tokenizer = clip_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    if favour is not None:
        ids = tokenizer([favour], return_tensors="pt").input_ids
        with torch.no_grad():
            target = model(input_ids=ids, pixel_values=torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).text_embeds[0]
            constant = torch.ones(config.vision_config.hidden_size)
            norm = model.vision_model.post_layernorm
            norm.weight.zero_()
            norm.bias.copy_(constant)
            model.visual_projection.weight.copy_(torch.outer(target, constant) / constant.dot(constant))
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
