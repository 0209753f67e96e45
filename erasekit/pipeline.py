"""Loading a Stable Diffusion pipeline: the bundled shapes world, a local diffusers folder, or a hub id.

`text_encoder=` / `unet=` swap in a component from a folder in diffusers layout: an erasekit artifact
(`<dir>/text_encoder/`), a bare component folder (`<dir>/config.json`), or a repository with named
subfolders like the published AdvUnlearn encoders (`<dir>/nudity_unlearned/`).

`resolve_device` / `resolve_dtype` turn the command line's --device / --dtype strings into torch objects.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import errors as hub_errors
from transformers import CLIPTextModel
from transformers.utils import logging as transformers_logging

from erasekit.errors import ErasekitError

SHAPES = "shapes"
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
# what the hub gives when it is unreachable or lacks the repo / file: OSError covers requests' ConnectionError,
# RepositoryNotFoundError and diffusers' offline error; EntryNotFoundError and the hub's HTTP client errors
# (connect / timeout) are not OSErrors in every huggingface_hub version
HUB_UNREACHABLE = (OSError, hub_errors.EntryNotFoundError, hub_errors.HTTPError)


def quiet_libraries() -> None:
    """Library chatter (loading bars, optional-backend notices) is not a command's output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The torch device for `name`: "auto" / None = cuda if available, else mps if available, else cpu."""
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = name if isinstance(name, torch.device) else torch.device(name.strip().lower())
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ErasekitError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ErasekitError(f"device '{name}' is not available (no CUDA GPU here): use --device auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ErasekitError(f"device '{name}' does not exist ({torch.cuda.device_count()} GPUs): pick a lower index")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ErasekitError(f"device '{name}' is not available (no Apple GPU here): use --device auto or cpu")
    return device


def resolve_dtype(name: str | torch.dtype | None = None, device: torch.device | None = None) -> torch.dtype:
    """The torch dtype for fp32 | bf16 | fp16 (or float32 | bfloat16 | float16); None = float32.

    With `device`, fp16 on the CPU is refused: CPU kernels for half precision are missing or very slow.
    """
    if name is None:
        return torch.float32
    dtype = name if isinstance(name, torch.dtype) else DTYPES.get(name.strip().lower())
    if dtype not in DTYPES.values():
        raise ErasekitError(f"unknown dtype '{name}': use fp32, bf16 or fp16")
    if dtype == torch.float16 and device is not None and device.type == "cpu":
        raise ErasekitError("fp16 does not run on the CPU: use --dtype fp32 or bf16 (or a GPU device)")
    return dtype


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
    except HUB_UNREACHABLE as e:  # hub unreachable, gated or missing: one line, with the fix; the rest propagates
        raise ErasekitError(
            f"cannot load '{spec}' from the model hub ({type(e).__name__}); download it where there is network "
            f"and pass the local folder instead, e.g. --model /path/to/{spec.split('/')[-1]}"
        ) from None


def load_pipeline(
    spec: str = SHAPES,
    text_encoder: str | Path | None = None,
    unet: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    text_encoder_subfolder: str | None = None,
    unet_subfolder: str | None = None,
) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline (no safety checker) with optional replaced text encoder / UNet.

    `device` / `dtype` take torch objects or the strings of `resolve_device` / `resolve_dtype`; device None leaves
    the pipeline on the CPU ("auto" picks the best device). The bundled world is stored in fp16 and loaded in
    float32 unless `dtype` says otherwise.
    """
    device = None if device is None else resolve_device(device)
    dtype = resolve_dtype(dtype, device or torch.device("cpu"))
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
