"""Erasure methods and the artifacts they write.

Each method module exposes a pydantic config (with `concepts`) and `erase(pipe, config, output, ...) -> dict`,
which trains, writes the artifact and checkpoints into `output`, and resumes from a checkpoint found there.
Prompts, retain prompts and any domain data arrive filled in by the caller (a domain: `erasekit.domains`).

    esd         ESD (UNet or text encoder), eq. 2-3
    advunlearn  AdvUnlearn: inner soft-prompt attack + ESD + retain term, eq. 5-7
    itd         ItD: SAE feature deactivation with a zero-shot gate (a patch, no weight change)
    robust      AdvUnlearn on the text encoder, then adversarial ESD on the UNet with inversion inner attacks

An artifact folder holds what `erase` wrote: `text_encoder/` and/or `unet/` (diffusers layout) and/or an ItD
patch (at the top or in `patch/`), with `erasekit.json`. `load_erased` loads a base model with any of them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from erasekit.errors import ErasekitError
from erasekit.methods.itd.patch import ARTIFACT as PATCH_ARTIFACT
from erasekit.methods.itd.patch import ItdPatch
from erasekit.pipeline import load_pipeline

METHODS: dict[str, tuple[str, str]] = {
    "esd": ("erasekit.methods.esd", "EsdConfig"),
    "advunlearn": ("erasekit.methods.advunlearn", "AdvUnlearnConfig"),
    "itd": ("erasekit.methods.itd", "ItdConfig"),
    "robust": ("erasekit.methods.robust", "RobustConfig"),
}


def load_method(name: str) -> tuple[Any, type]:
    """(module with `erase`, its config class), or a one-line error for an unknown method."""
    if name not in METHODS:
        raise ErasekitError(f"unknown method '{name}': use one of {', '.join(METHODS)}")
    module_name, config_name = METHODS[name]
    module = importlib.import_module(module_name)
    return module, getattr(module, config_name)


def _is_patch(folder: Path) -> bool:
    info = folder / "erasekit.json"
    return info.is_file() and json.loads(info.read_text()).get("component") == PATCH_ARTIFACT


def artifact_parts(folder: str | Path) -> dict[str, str]:
    """{"text_encoder" | "unet" | "patch": folder} for what an `erasekit erase` output folder holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ErasekitError(f"artifact folder {folder} does not exist: pass the -o folder of `erasekit erase`")
    parts = {c: str(folder) for c in ("text_encoder", "unet") if (folder / c / "config.json").is_file()}
    for candidate in (folder, folder / "patch"):
        if _is_patch(candidate):
            parts["patch"] = str(candidate)
    if not parts:
        raise ErasekitError(
            f"{folder} holds no erasekit artifact (text_encoder/, unet/ or an ItD patch): pass an `erasekit erase` output"
        )
    return parts


def erased_parts(
    artifact: str | Path | None = None,
    text_encoder: str | Path | None = None,
    unet: str | Path | None = None,
    patch: str | Path | None = None,
) -> dict[str, str]:
    """The changed parts to load: those of `artifact`, with explicit --text-encoder / --unet / --patch on top."""
    parts = artifact_parts(artifact) if artifact is not None else {}
    explicit = {"text_encoder": text_encoder, "unet": unet, "patch": patch}
    parts.update({k: str(v) for k, v in explicit.items() if v is not None})
    return parts


def load_erased(
    spec: str,
    parts: dict[str, str],
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """The base model `spec` with the erased parts ({"text_encoder" | "unet" | "patch": folder}) loaded/attached."""
    pipe = load_pipeline(
        spec, text_encoder=parts.get("text_encoder"), unet=parts.get("unet"), device=device, dtype=dtype
    )
    if "patch" in parts:
        ItdPatch.load(parts["patch"]).attach(pipe)
    return pipe


def parts_card(parts: dict[str, str]) -> dict[str, Any]:
    """What each loaded part is: its folder and the JSON it carries about how it was made."""
    out: dict[str, Any] = {}
    for key, folder in parts.items():
        info = Path(folder) / "erasekit.json"
        out[key] = {"folder": folder, "info": json.loads(info.read_text()) if info.is_file() else {}}
    return out
