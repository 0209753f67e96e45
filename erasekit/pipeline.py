"""Loading a Stable Diffusion pipeline: the bundled shapes world, a local diffusers folder, or a hub id.

`text_encoder=` / `unet=` swap in a component from a folder in diffusers layout: an erasekit artifact
(`<dir>/text_encoder/`), a bare component folder (`<dir>/config.json`), or a repository with named
subfolders like the published AdvUnlearn encoders (`<dir>/nudity_unlearned/`).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from erasekit.errors import ErasekitError

SHAPES = "shapes"


def bundle_dir() -> Path:
    """Folder of the bundled shapes-world weights (pipeline/, classifier/, clip/)."""
    return Path(str(resources.files("erasekit.world").joinpath("weights")))


def _resolve_component(path: str | Path, component: str, subfolder: str | None) -> tuple[str, str | None]:
    """(folder, subfolder) holding a component's config.json, or a one-line error that says what to pass."""
    root = Path(path)
    if subfolder is not None:
        if not (root / subfolder / "config.json").is_file():
            raise ErasekitError(f"no {component} in {root / subfolder}: check the folder and subfolder names")
        return str(root), subfolder
    if not root.exists():
        raise ErasekitError(f"{component} folder {root} does not exist: pass the output folder of `erasekit erase`")
    if (root / "config.json").is_file():
        return str(root), None
    if (root / component / "config.json").is_file():
        return str(root), component
    candidates = sorted(p.parent.name for p in root.glob("*/config.json"))
    if len(candidates) == 1:
        return str(root), candidates[0]
    hint = f"; pick one of {candidates} with --{component.replace('_', '-')}-subfolder" if candidates else ""
    raise ErasekitError(f"no {component} in {root} (expected config.json or {component}/config.json){hint}")


def _load_base(spec: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    kw = dict(dtype=dtype, safety_checker=None, requires_safety_checker=False)
    if spec == SHAPES:
        folder = bundle_dir() / "pipeline"
        if not (folder / "model_index.json").is_file():
            raise ErasekitError("the bundled shapes-world weights are missing: run `erasekit world train`")
        return StableDiffusionPipeline.from_pretrained(str(folder), **kw)
    path = Path(spec)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ErasekitError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        return StableDiffusionPipeline.from_pretrained(str(path), **kw)
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ErasekitError(
            f"unknown model '{spec}': use 'shapes', a local diffusers folder, or a hub id like CompVis/stable-diffusion-v1-4"
        )
    try:
        return StableDiffusionPipeline.from_pretrained(spec, **kw)
    except Exception as e:  # hub unreachable, gated or missing: one line, with the fix
        raise ErasekitError(
            f"cannot load '{spec}' from the model hub ({type(e).__name__}); download it where there is network "
            f"and pass the local folder instead, e.g. --model /path/to/{spec.split('/')[-1]}"
        ) from None


def load_pipeline(
    spec: str = SHAPES,
    text_encoder: str | Path | None = None,
    unet: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    text_encoder_subfolder: str | None = None,
    unet_subfolder: str | None = None,
) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline (no safety checker) with optional replaced text encoder / UNet.

    The bundled world is stored in fp16 and loaded in float32 unless `dtype` says otherwise.
    """
    dtype = dtype or torch.float32
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    pipe = _load_base(spec, dtype)
    if text_encoder is not None:
        folder, sub = _resolve_component(text_encoder, "text_encoder", text_encoder_subfolder)
        te = CLIPTextModel.from_pretrained(folder, subfolder=sub or "", dtype=dtype)
        if te.config.hidden_size != pipe.unet.config.cross_attention_dim:
            raise ErasekitError(
                f"text encoder {text_encoder} has hidden size {te.config.hidden_size} but the UNet expects "
                f"{pipe.unet.config.cross_attention_dim}: use an encoder erased from this model family"
            )
        pipe.text_encoder = te
    if unet is not None:
        folder, sub = _resolve_component(unet, "unet", unet_subfolder)
        new = UNet2DConditionModel.from_pretrained(folder, subfolder=sub, dtype=dtype)
        if new.config.cross_attention_dim != pipe.text_encoder.config.hidden_size:
            raise ErasekitError(f"UNet {unet} does not fit this pipeline's text encoder: use a UNet erased from it")
        pipe.unet = new
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


def artifact_info(folder: str | Path) -> dict:
    """The JSON an erasekit artifact carries about how it was made ({} when absent)."""
    path = Path(folder) / "erasekit.json"
    return json.loads(path.read_text()) if path.is_file() else {}
