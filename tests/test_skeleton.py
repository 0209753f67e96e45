import importlib.util
import json

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from sd_fixture import build_tiny_sd
from transformers import CLIPTextConfig, CLIPTextModel

from erasekit import skeleton
from erasekit.errors import ErasekitError
from erasekit.generation import generate
from erasekit.pipeline import load_pipeline


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return load_pipeline(str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny")))


def test_clip_tokenizer_matches_openai(tmp_path):
    folder = skeleton.clip_tokenizer_files(tmp_path / "tok")
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = (folder / "merges.txt").read_text().splitlines()
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    assert vocab["!"] == 0 and vocab["a</w>"] == 320 and vocab["<|startoftext|>"] == 49406
    tok = skeleton.clip_tokenizer(folder)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == 77
    assert tok.pad_token == tok.eos_token == "<|endoftext|>" and tok.pad_token_id == 49407
    assert tok.bos_token_id == 49406
    padded = tok("A Photo of a CAT!", padding="max_length", max_length=77).input_ids
    assert padded[:8] == [49406, 320, 1125, 539, 320, 2368, 256, 49407] and padded[8:] == [49407] * 69


def test_missing_open_clip_is_one_line(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ErasekitError, match="pip install --no-deps open-clip-torch") as info:
        skeleton.clip_tokenizer()
    assert "\n" not in str(info.value)


def test_full_configs_are_sd_v14():
    cfg = skeleton.sd_v14_configs("full")
    unet, vae, te, sched = cfg["unet"], cfg["vae"], cfg["text_encoder"], cfg["scheduler"]
    assert unet["block_out_channels"] == (320, 640, 1280, 1280) and unet["attention_head_dim"] == 8
    assert unet["cross_attention_dim"] == te["hidden_size"] == 768 and unet["sample_size"] == 64
    assert (te["num_hidden_layers"], te["num_attention_heads"], te["intermediate_size"]) == (12, 12, 3072)
    assert te["max_position_embeddings"] == 77 and te["vocab_size"] == 49408
    assert vae["block_out_channels"] == (128, 256, 512, 512) and vae["sample_size"] == 512
    # built on the meta device (no memory): SD v1.4's parameter counts, to the parameter
    with torch.device("meta"):
        models = [UNet2DConditionModel(**unet), AutoencoderKL(**vae), CLIPTextModel(CLIPTextConfig(**te))]
    assert [sum(p.numel() for p in m.parameters()) for m in models] == [859_520_964, 83_653_863, 123_060_480]
    tiny = skeleton.sd_v14_configs("tiny")
    for part in ("unet", "vae", "text_encoder"):
        differ = {k for k in cfg[part] if cfg[part][k] != tiny[part][k]}
        assert differ <= {
            "block_out_channels", "attention_head_dim", "cross_attention_dim", "sample_size", "hidden_size",
            "intermediate_size", "num_attention_heads", "projection_dim",
        }  # fmt: skip
    assert tiny["scheduler"] == sched
    with pytest.raises(ErasekitError, match="tiny, full"):
        skeleton.sd_v14_configs("huge")


def test_tiny_pipeline_has_sd_v14_structure(tiny_sd):
    unet, vae, te = tiny_sd.unet.config, tiny_sd.vae.config, tiny_sd.text_encoder.config
    assert list(unet.down_block_types) == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert list(unet.up_block_types) == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert unet.layers_per_block == 2 and unet.in_channels == unet.out_channels == 4
    assert unet.cross_attention_dim == te.hidden_size
    assert [type(b).__name__ for b in tiny_sd.unet.down_blocks] == list(unet.down_block_types)
    assert all(len(b.resnets) == 2 for b in tiny_sd.unet.down_blocks)
    assert tiny_sd.vae_scale_factor == 8 and vae.latent_channels == 4 and vae.scaling_factor == 0.18215
    assert te.max_position_embeddings == 77 and te.num_hidden_layers == 12 and te.vocab_size == 49408
    sched = tiny_sd.scheduler
    assert isinstance(sched, PNDMScheduler) and sched.config.skip_prk_steps and sched.config.steps_offset == 1
    assert sched.config.beta_schedule == "scaled_linear" and not sched.config.set_alpha_to_one
    assert (sched.config.beta_start, sched.config.beta_end) == (0.00085, 0.012)
    assert tiny_sd.safety_checker is None
    assert tiny_sd.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tiny_pipeline_is_seeded(tmp_path, tiny_sd):
    again = load_pipeline(str(build_tiny_sd(tmp_path / "again")))
    for a, b in zip(tiny_sd.unet.parameters(), again.unet.parameters()):
        assert torch.equal(a, b)
    other = skeleton.sd_pipeline("tiny", seed=1, tokenizer=tiny_sd.tokenizer)
    assert not torch.equal(other.unet.conv_in.weight, tiny_sd.unet.conv_in.weight)


def test_tiny_pipeline_generates(tiny_sd):
    images = generate(tiny_sd, ["a photo of a cat", "a church in a field"], [0, 1], steps=2)
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    assert (images[0] - images[1]).abs().max() > 0.1  # the prompt and seed reach the image
    alone = generate(tiny_sd, ["a photo of a cat"], [0], steps=2)  # batch-independent up to float rounding
    assert torch.allclose(alone[0], images[0], atol=2e-3)
