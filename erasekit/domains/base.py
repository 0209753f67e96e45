"""The domain interface (see `erasekit.domains`) and how a shapes-world spec is recognised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from erasekit.eval.harness import EvalConfig, EvalPlan
from erasekit.pipeline import SHAPES, bundle_dir


class Domain:
    """The interface every domain implements (see the module docstring); `spec` is the model spec."""

    name = ""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    # ---- concepts and methods ------------------------------------------------------------------------------
    def check_concepts(self, concepts: list[str]) -> None:
        """Raise a one-line error for a concept this domain cannot erase or judge."""
        raise NotImplementedError

    def recipe_name(self, method: str, concepts: list[str]) -> str:
        """The shipped recipe for `method` on these concepts (e.g. "sd/advunlearn-nudity")."""
        raise NotImplementedError

    def recipe_options(self, recipe: dict[str, Any], concepts: list[str]) -> dict[str, Any]:
        """The recipe's options for these concepts (a per-concept mapping resolved); default: as written."""
        return recipe

    def fill(self, method: str, config: BaseModel) -> BaseModel:
        """The config with the domain's training / retain prompts where the user left them empty."""
        raise NotImplementedError

    def method_inputs(self, method: str, config: BaseModel) -> dict[str, Any]:
        """Extra keyword arguments of the method's `erase` (ItD: its prompt inputs)."""
        return {}

    # ---- evaluation ----------------------------------------------------------------------------------------
    def eval_plan(self, cfg: EvalConfig, original, device: torch.device) -> EvalPlan:
        """Prompt sets, detector, scorers and references for `cfg.concept`; `original` is the unmodified pipeline."""
        raise NotImplementedError

    def attack_plan(
        self, concept: str, n: int, seed: int, prompts: str | None, original, detector_model: str | None = None
    ) -> EvalPlan:
        """The attack command's target prompts (held-out), detector, vocabulary and concept images."""
        raise NotImplementedError


def is_shapes(spec: str) -> bool:
    """ "shapes", or a pipeline folder whose parent is a shapes-world bundle (README.json + classifier/)."""
    if spec == SHAPES:
        return True
    path = Path(spec)
    about = path.parent / "README.json"
    return (
        path.is_dir()
        and about.is_file()
        and (path.parent / "classifier").is_dir()
        and "shapes world" in json.loads(about.read_text()).get("what", "")
    )


def world_bundle(spec: str) -> Path:
    """The shapes-world bundle folder of a spec (pipeline/, classifier/, clip/)."""
    return bundle_dir() if spec == SHAPES else Path(spec).parent
