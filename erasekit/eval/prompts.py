"""Prompt sets for evaluation: the shapes world's shipped sets, and readers for user-supplied CSVs.

read_i2p_csv     I2P / UnlearnDiffAtk format: prompt, evaluation_seed, evaluation_guidance, categories,
                 nudity_percentage (sd_seed / sd_guidance accepted as fallbacks)
read_coco_csv    COCO captions with seeds: prompt (or caption), evaluation_seed (or seed), optional case_number
shapes_sets      the world's target / retain / FID sets for a concept
content_hash     sha256 over prompts, seeds and guidances: the protocol card's fingerprint of a set
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from erasekit.errors import ErasekitError
from erasekit.world.prompt_sets import PromptSet, retain_set, target_set, world_set


@dataclass
class EvalPromptSet(PromptSet):
    """A PromptSet whose rows may carry their own guidance scale (I2P does); None = use the run's guidance."""

    guidance: list[float] | None = None
    source: str = "erasekit"


def content_hash(ps: PromptSet) -> str:
    """sha256 of the set's rows (prompt, seed, guidance), so two runs can tell they used the same set."""
    rows = {"prompts": ps.prompts, "seeds": ps.seeds, "guidance": getattr(ps, "guidance", None)}
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def set_card(ps: PromptSet) -> dict:
    return {"name": ps.name, "rows": len(ps), "sha256": content_hash(ps), "source": getattr(ps, "source", "erasekit")}


def _read_rows(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ErasekitError(f"prompt file {path} does not exist: pass a CSV you have downloaded")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ErasekitError(f"{path} has no rows: give a CSV with a header line and at least one prompt")
    return rows


def _column(rows: list[dict[str, str]], names: tuple[str, ...], path: Path, required: bool) -> str | None:
    for n in names:
        if n in rows[0]:
            return n
    if required:
        raise ErasekitError(f"{path} has no column {' or '.join(names)} (columns: {', '.join(rows[0])})")
    return None


def _number(value: str, kind: type, path: Path, line: int, column: str) -> float | int:
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        raise ErasekitError(f"{path} line {line}: '{value}' in column {column} is not a number; fix the row") from None


def read_i2p_csv(
    path: str | Path, category: str | None = None, min_nudity: float | None = None, limit: int | None = None
) -> EvalPromptSet:
    """Rows of an I2P-format CSV, optionally only those whose categories contain `category` and whose
    nudity_percentage >= min_nudity; each row keeps its own seed and guidance."""
    path = Path(path)
    rows = _read_rows(path)
    p = _column(rows, ("prompt",), path, True)
    s = _column(rows, ("evaluation_seed", "sd_seed"), path, True)
    g = _column(rows, ("evaluation_guidance", "sd_guidance"), path, False)
    cat = _column(rows, ("categories",), path, category is not None)
    nud = _column(rows, ("nudity_percentage",), path, min_nudity is not None)
    kept = []
    for line, r in enumerate(rows, start=2):
        if category is not None and category not in (r[cat] or ""):
            continue
        if min_nudity is not None and _number(r[nud], float, path, line, nud) < min_nudity:
            continue
        kept.append((line, r))
    kept = kept[:limit] if limit is not None else kept
    if not kept:
        raise ErasekitError(f"no rows of {path} match category={category!r}, min_nudity={min_nudity}: relax the filter")
    return EvalPromptSet(
        name=f"i2p:{path.name}" + (f"[{category}]" if category else ""),
        prompts=[r[p] for _, r in kept],
        seeds=[int(_number(r[s], int, path, line, s)) for line, r in kept],
        guidance=[float(_number(r[g], float, path, line, g)) for line, r in kept] if g else None,
        source=str(path),
    )


def read_coco_csv(path: str | Path, limit: int | None = None, seed: int = 0) -> EvalPromptSet:
    """COCO captions: `prompt` or `caption`; seeds from `evaluation_seed`/`seed`, else seed + row index."""
    path = Path(path)
    rows = _read_rows(path)[:limit]
    p = _column(rows, ("prompt", "caption"), path, True)
    s = _column(rows, ("evaluation_seed", "seed"), path, False)
    seeds = [int(_number(r[s], int, path, i + 2, s)) for i, r in enumerate(rows)] if s else None
    return EvalPromptSet(
        name=f"coco:{path.name}",
        prompts=[r[p] for r in rows],
        seeds=seeds or [seed + i for i in range(len(rows))],
        source=str(path),
    )


def shapes_sets(concept: str, n_target: int = 50, n_retain: int = 50, n_world: int = 200, seed: int = 0) -> dict:
    """The shipped world sets on held-out templates: {"target", "retain", "world"} PromptSets."""
    return {
        "target": target_set(concept, n_target, "heldout", seed),
        "retain": retain_set(concept, n_retain, "heldout", seed),
        "world": world_set(n_world, "heldout", seed),
    }
