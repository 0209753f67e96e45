"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[str, typer.Option("--model", help="'shapes', a local diffusers folder, or a hub id.")]
Artifact = Annotated[
    Path | None, typer.Option("--artifact", help="Output folder of `erasekit erase` (any method's parts).")
]
TextEncoder = Annotated[
    Path | None, typer.Option("--text-encoder", help="Folder of an erased text encoder (mix parts of runs).")
]
Unet = Annotated[Path | None, typer.Option("--unet", help="Folder of an erased UNet (mix parts of runs).")]
Patch = Annotated[Path | None, typer.Option("--patch", help="Folder of an ItD patch to attach.")]
Device = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N | mps (default: a GPU if any).")]
Dtype = Annotated[str | None, typer.Option("--dtype", help="fp32 | bf16 | fp16 (trained parts stay fp32).")]
Config = Annotated[Path | None, typer.Option("--config", help="YAML file of the command's options.")]
Sets = Annotated[list[str], typer.Option("--set", help="key=value option override, dotted keys nest (repeatable).")]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
SampleSteps = Annotated[int | None, typer.Option("--sample-steps", help="Sampling (denoising) steps.", min=1)]
Guidance = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
