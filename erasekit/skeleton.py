"""Stable Diffusion v1.4's exact architecture with random weights, and OpenAI's CLIP tokenizer built offline.

    clip_tokenizer_files(folder)          -> folder with vocab.json + merges.txt (49,408 tokens) + tokenizer configs
    clip_tokenizer(folder=None)           -> CLIPTokenizer, 77 positions, pad = <|endoftext|> (as SD v1.4 ships it)
    sd_v14_configs(width)                 -> {"unet", "vae", "text_encoder", "scheduler"} constructor kwargs
    sd_pipeline(width, seed)              -> StableDiffusionPipeline in memory (random weights, no safety checker)
    build_sd_pipeline(folder, width, seed) -> folder written with save_pretrained (safetensors)

The tokenizer comes from OpenAI's BPE merges file `bpe_simple_vocab_16e6.txt.gz`, shipped inside the
open-clip-torch wheel; the file is located without importing open_clip (which needs torchvision).

Widths: "full" is SD v1.4 as the hub ships it (UNet 320/640/1280/1280, ~860 M parameters; text encoder
CLIP ViT-L/14's, hidden 768, 12 layers; VAE 128/256/512/512; 64x64 latents = 512x512 images). "tiny" keeps every
structural property (block types, 2 layers per block, 4 latent channels, 8x VAE, 12 text layers, 77 positions,
the real 49,408-token vocabulary, PNDM) but not the widths: UNet 32/32/64/64 with 2 heads, text hidden 32 =
cross-attention 32, VAE 32/32/64/64, and 8x8 latents (64x64 images) so that a test builds and samples in seconds.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Literal

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from erasekit.errors import ErasekitError

Width = Literal["tiny", "full"]
WIDTHS = ("tiny", "full")

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # OpenAI's CLIP keeps the first 48,894 merges (simple_tokenizer.py)
VOCAB_SIZE = 2 * 256 + N_MERGES + 2  # bytes, bytes + '</w>', merges, BOS/EOS = 49,408
MAX_LENGTH = 77

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def bpe_file() -> Path:
    """OpenAI's BPE merges file inside the installed open-clip-torch wheel (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    raise ErasekitError(
        "the CLIP tokenizer's BPE file ships with open-clip-torch, which is not installed: "
        "pip install --no-deps open-clip-torch"
    )


def clip_tokenizer_files(folder: str | Path) -> Path:
    """Write CLIP's tokenizer (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) to folder.

    The vocabulary is built as OpenAI's simple_tokenizer.py builds it: the 256 byte characters, the same with
    '</w>', merges 1..48,894 of the file (line 0 is a version header) joined, then <|startoftext|>, <|endoftext|>.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_file(), "rt", encoding="utf-8").read().split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ErasekitError(f"{bpe_file()} gives {len(vocab)} tokens, not {VOCAB_SIZE}: reinstall open-clip-torch")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": MAX_LENGTH,
        "tokenizer_class": "CLIPTokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def clip_tokenizer(folder: str | Path | None = None) -> CLIPTokenizer:
    """CLIP ViT-L/14's tokenizer as SD v1.x uses it; built in `folder` (kept) or in a temporary folder."""
    if folder is not None:
        return CLIPTokenizer.from_pretrained(str(clip_tokenizer_files(folder)))
    with TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(str(clip_tokenizer_files(tmp)))


def sd_v14_configs(width: Width = "tiny") -> dict[str, dict]:
    """Constructor kwargs of SD v1.4's UNet, VAE, text encoder (CLIPTextConfig) and scheduler at `width`.

    "full" repeats the hub's configs (CompVis/stable-diffusion-v1-4): UNet `attention_head_dim` 8 is diffusers'
    legacy name for 8 heads; the text config keeps the hub's token ids (bos 0, pad 1, eos 2), whose eos selects
    transformers' argmax pooling, which finds <|endoftext|> as the largest id.
    """
    if width not in WIDTHS:
        raise ErasekitError(f"unknown width '{width}': use one of {', '.join(WIDTHS)}")
    full = width == "full"
    hidden = 768 if full else 32
    unet = {
        "sample_size": 64 if full else 8,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": DOWN_BLOCKS,
        "up_block_types": UP_BLOCKS,
        "block_out_channels": (320, 640, 1280, 1280) if full else (32, 32, 64, 64),
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": hidden,
        "attention_head_dim": 8 if full else 2,
    }
    vae = {
        "sample_size": 512 if full else 64,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512) if full else (32, 32, 64, 64),
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "scaling_factor": 0.18215,
    }
    text_encoder = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": 12,
        "num_attention_heads": 12 if full else 4,
        "max_position_embeddings": MAX_LENGTH,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": hidden,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
    }
    scheduler = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def sd_pipeline(
    width: Width = "tiny", seed: int = 0, tokenizer: CLIPTokenizer | None = None
) -> StableDiffusionPipeline:
    """SD v1.4's pipeline at `width` with random weights drawn from `seed` (the global RNG is left untouched)."""
    cfg = sd_v14_configs(width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer or clip_tokenizer(),
        unet=unet.eval(),
        scheduler=PNDMScheduler(**cfg["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd_pipeline(folder: str | Path, width: Width = "tiny", seed: int = 0) -> Path:
    """Write SD v1.4's pipeline at `width` with random weights to `folder` (diffusers layout, safetensors)."""
    out = Path(folder)
    sd_pipeline(width, seed).save_pretrained(str(out), safe_serialization=True)
    return out
