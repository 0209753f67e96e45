"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[str, typer.Option("--model", help="'shapes', a local diffusers folder, or a hub id.")]
TextEncoder = Annotated[
    Path | None, typer.Option("--text-encoder", help="Folder of an erased text encoder (diffusers layout).")
]
Unet = Annotated[Path | None, typer.Option("--unet", help="Folder of an erased UNet (diffusers layout).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Steps = Annotated[int, typer.Option("--steps", help="DDIM sampling steps.", min=1)]
Guidance = Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")]
