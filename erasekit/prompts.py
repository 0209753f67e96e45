"""Prompt sets and prompt files, one format for every command.

PromptSet        prompts with one seed each (+ optional per-row guidance and scene labels), named and hashed
read_prompt_file .txt: one prompt a line (seeds seed, seed+1, ...); .csv: I2P / UnlearnDiffAtk columns
                 (prompt or caption, evaluation_seed / sd_seed / seed, evaluation_guidance / sd_guidance,
                 categories, nudity_percentage), detected from the extension
content_hash     sha256 over prompts, seeds and guidances: the protocol card's fingerprint of a set
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from erasekit.errors import ErasekitError


@dataclass
class PromptSet:
    """Prompts with one seed each; `guidance` per row (I2P has it; None = the run's), `labels` per attribute
    (the shapes world's scene indices), `source` where the rows came from."""

    name: str
    prompts: list[str]
    seeds: list[int]
    labels: dict[str, list[int]] = field(default_factory=dict)
    guidance: list[float] | None = None
    source: str = "erasekit"

    def __len__(self) -> int:
        return len(self.prompts)


def content_hash(ps: PromptSet) -> str:
    """sha256 of the set's rows (prompt, seed, guidance), so two runs can tell they used the same set."""
    rows = {"prompts": ps.prompts, "seeds": ps.seeds, "guidance": ps.guidance}
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def set_card(ps: PromptSet) -> dict:
    return {"name": ps.name, "rows": len(ps), "sha256": content_hash(ps), "source": ps.source}


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


def read_csv_set(
    path: str | Path,
    category: str | None = None,
    min_nudity: float | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> PromptSet:
    """Rows of an I2P-format CSV (or a COCO caption CSV), optionally only those whose categories contain `category`
    and whose nudity_percentage >= min_nudity; each row keeps its own seed (else seed + row) and guidance."""
    path = Path(path)
    rows = _read_rows(path)
    p = _column(rows, ("prompt", "caption"), path, True)
    s = _column(rows, ("evaluation_seed", "sd_seed", "seed"), path, False)
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
    return PromptSet(
        name=f"csv:{path.name}" + (f"[{category}]" if category else ""),
        prompts=[r[p] for _, r in kept],
        seeds=[int(_number(r[s], int, path, line, s)) if s else seed + i for i, (line, r) in enumerate(kept)],
        guidance=[float(_number(r[g], float, path, line, g)) for line, r in kept] if g else None,
        source=str(path),
    )


def read_text_set(path: str | Path, limit: int | None = None, seed: int = 0) -> PromptSet:
    """A .txt file, one prompt a line (blank lines and lines starting with # skipped); seeds seed + row."""
    path = Path(path)
    if not path.is_file():
        raise ErasekitError(f"prompt file {path} does not exist: pass a .txt (one prompt a line) or .csv file")
    prompts = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
    prompts = [x for x in prompts if x and not x.startswith("#")][:limit]
    if not prompts:
        raise ErasekitError(f"{path} holds no prompts: write one prompt a line")
    return PromptSet(f"txt:{path.name}", prompts, [seed + i for i in range(len(prompts))], source=str(path))


def read_prompt_file(
    path: str | Path,
    limit: int | None = None,
    seed: int = 0,
    category: str | None = None,
    min_nudity: float | None = None,
) -> PromptSet:
    """A prompt file of either format, chosen by its extension (.csv: I2P columns; anything else: text)."""
    if Path(path).suffix.lower() == ".csv":
        return read_csv_set(path, category, min_nudity, limit, seed)
    if category is not None or min_nudity is not None:
        raise ErasekitError("--category / --min-nudity filter I2P CSV files: pass a .csv prompt file")
    return read_text_set(path, limit, seed)
