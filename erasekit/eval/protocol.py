"""The protocol card: everything needed to repeat an evaluation, recorded beside its numbers."""

from __future__ import annotations

import platform
from importlib import metadata

import torch


def _versions(*packages: str) -> dict[str, str]:
    out = {}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def sampler_card(pipe, steps: int, guidance: float | str) -> dict:
    """Sampler, steps, guidance and image size of a diffusers pipeline."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return {
        "scheduler": type(pipe.scheduler).__name__,
        "steps": steps,
        "guidance": guidance,
        "eta": 0.0,
        "image_size": [size, size],
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
    }


def protocol_card(
    *,
    model: dict,
    detector: dict,
    prompt_sets: dict[str, dict],
    sampler: dict,
    seed: int,
    features: dict | None = None,
    attacks: dict | None = None,
) -> dict:
    """One JSON-ready dict: model, detector (name/version/classes/threshold), prompt sets (name/rows/sha256),
    seeds, sampler, feature model, attack settings and library versions."""
    return {
        "model": model,
        "detector": detector,
        "prompt_sets": prompt_sets,
        "seeds": {"base": seed, "rule": "one seed per prompt row (the set's own seeds); same seeds for every model"},
        "sampler": sampler,
        "features": features,
        "attacks": attacks,
        "software": {
            **_versions("erasekit", "torch", "diffusers", "transformers", "nudenet"),
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
    }
