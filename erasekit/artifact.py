"""Artifacts: only the changed component in diffusers layout, plus `erasekit.json` saying how it was made.

    <output>/text_encoder/  or  <output>/unet/     config.json + safetensors (save_pretrained)
    <output>/erasekit.json                         {"component": ..., "method": ..., "config": {...}, ...}

`erasekit.pipeline.load_pipeline(spec, text_encoder=<output>)` (or `unet=`) loads it into any pipeline of the
same architecture; `load_original_component` gives a fresh, frozen copy of a base model's component.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from erasekit.errors import ErasekitError
from erasekit.pipeline import SHAPES, bundle_dir

COMPONENTS = ("text_encoder", "unet")


def save_artifact(output: str | Path, component: str, module: torch.nn.Module, info: dict[str, Any]) -> Path:
    """Write `module` to output/component in diffusers layout and the run description to output/erasekit.json."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}")
    output = Path(output)
    folder = output / component
    module.save_pretrained(str(folder), safe_serialization=True)
    (output / "erasekit.json").write_text(json.dumps({"component": component, **info}, indent=1, default=str))
    return folder


def load_original_component(spec: str, component: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A frozen copy of the base model's `component` ("text_encoder" | "unet") for spec "shapes" | folder | hub id."""
    root = str(bundle_dir() / "pipeline") if spec == SHAPES else spec
    cls = CLIPTextModel if component == "text_encoder" else UNet2DConditionModel
    try:
        module = cls.from_pretrained(root, subfolder=component, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ErasekitError(
            f"cannot load the original {component} of '{spec}' ({type(e).__name__}): check --model"
        ) from None
    return module.requires_grad_(False).eval()
