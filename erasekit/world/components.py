"""Architectures of the shapes world: the real diffusers/transformers classes at miniature size.

text encoder  CLIPTextModel, hidden 64, 4 layers, 24 positions     (B, 24) ids -> (B, 24, 64)
VAE           AutoencoderKL, 32x32x3 <-> 4x8x8 latents
UNet          UNet2DConditionModel on 4x8x8 latents, cross-attention dim 64
schedulers    DDPMScheduler (training), DDIMScheduler (sampling); SD v1's scaled-linear betas
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from erasekit.world.tokenizer import MAX_LENGTH

SCHEDULER_KW = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
)


def text_encoder_config(tokenizer: CLIPTokenizer, hidden: int = 64, layers: int = 4) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def make_text_encoder(tokenizer: CLIPTokenizer, hidden: int = 64, layers: int = 4) -> CLIPTextModel:
    return CLIPTextModel(text_encoder_config(tokenizer, hidden, layers))


def make_vae(width: int = 32) -> AutoencoderKL:
    """32x32x3 images <-> 4x8x8 latents (two downsamplings)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(width, 2 * width, 2 * width),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=32,
    )


def make_unet(width: int = 64, cross_attention_dim: int = 64) -> UNet2DConditionModel:
    """UNet on 4x8x8 latents: 8x8 and 4x4 levels, cross-attention to the text encoder at both."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(width, 2 * width),
        layers_per_block=2,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=32,
        norm_num_groups=16,
    )


def make_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    """(training scheduler, sampling scheduler) with matching betas."""
    ddim = DDIMScheduler(**SCHEDULER_KW, set_alpha_to_one=False, steps_offset=1)
    return DDPMScheduler(**SCHEDULER_KW), ddim


def assemble_pipeline(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, vae: AutoencoderKL, unet: UNet2DConditionModel
) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline with no safety checker, sampling with DDIM."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_schedulers()[1],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
