"""ItD's inputs on the bundled shapes world: the SAE corpus, per-concept selection prompts, retain concepts and
gate prompts, all drawn from the world's prompt generator with fixed seeds.

    shapes_itd_corpus(cfg)              -> SAE training prompts: cfg.prompts_file, else cfg.corpus_size captions
    shapes_itd_inputs(concepts, cfg)    -> ItdInputs for erasekit.methods.itd.erase

Seeds (offsets from cfg.seed): corpus +0, target prompts for selection +100 + i, retain concepts +150 + i (sorted
by name), gate calibration +200 (training templates), held-out gate report +300 (held-out templates).
"""

from __future__ import annotations

import torch

from erasekit.methods.itd import ItdConfig, SaeConfig
from erasekit.methods.itd.activations import read_prompts
from erasekit.methods.itd.inputs import ItdInputs, Sides
from erasekit.world.prompt_sets import ATTRIBUTES, PromptSet, concept_attribute, retain_set, target_set, world_set
from erasekit.world.prompts import training_prompt
from erasekit.world.render import sample_scenes


def shapes_itd_corpus(cfg: SaeConfig) -> list[str]:
    """The SAE's training prompts: `cfg.prompts_file`, else `cfg.corpus_size` captions of random world scenes
    (full and partial training templates, seed `cfg.seed`)."""
    if cfg.prompts_file:
        return read_prompts(cfg.prompts_file)
    g = torch.Generator().manual_seed(cfg.seed)
    return [training_prompt(s, g) for s in sample_scenes(cfg.corpus_size, g)]


def default_retain(concept: str, concepts: list[str]) -> list[str]:
    """The other values of the concept's own attribute, less the patch's targets (other shapes for 'circle')."""
    return [v for v in ATTRIBUTES[concept_attribute(concept)] if v not in concepts]


def _without(sets: list[PromptSet], concepts: list[str]) -> list[str]:
    """The prompts of world PromptSets that name none of `concepts`."""
    banned = [(concept_attribute(c), ATTRIBUTES[concept_attribute(c)].index(c)) for c in concepts]
    return [p for s in sets for j, p in enumerate(s.prompts) if all(s.labels[a][j] != v for a, v in banned)]


def _sample(prompts: list[str], n: int, seed: int) -> list[str]:
    return [prompts[i] for i in torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))[:n]]


def gate_sides(concepts: list[str], n: int, split: str, seed: int) -> tuple[dict[str, Sides], Sides]:
    """Per concept n prompts naming it and n naming it not (its retain set, world prompts and the other targets'
    prompts: a red square must not fire the circle gate); and (all those targets, n prompts naming no target)."""
    pos = {c: target_set(c, n, split, seed + i) for i, c in enumerate(concepts)}
    world = world_set(2 * n, split, seed)
    per = {
        c: (pos[c].prompts, _sample(_without([retain_set(c, n, split, seed), world, *pos.values()], [c]), n, seed))
        for c in concepts
    }  # fmt: skip
    none = _without([*(retain_set(c, n, split, seed) for c in concepts), world], concepts)
    return per, ([p for ps in pos.values() for p in ps.prompts], _sample(none, n, seed))


def shapes_itd_inputs(concepts: list[str], cfg: ItdConfig) -> ItdInputs:
    """ItdInputs for world words `concepts` (a one-line error for any other word).

    Selection prompts: `cfg.select_prompts` training-template prompts naming each concept; retain concepts:
    `cfg.retain`, else the attribute's other values; gate (when `cfg.gate`): `cfg.calib_prompts` per side from
    the training templates (calibration) and the held-out templates (report).
    """
    for c in concepts:
        concept_attribute(c)
    retain = {c: list(cfg.retain) if cfg.retain is not None else default_retain(c, concepts) for c in concepts}
    names = sorted(set().union(*retain.values()))
    n, seed = cfg.select_prompts, cfg.seed
    gate = None
    if cfg.gate:
        gate = {
            "calibration": gate_sides(concepts, cfg.calib_prompts, "train", seed + 200),
            "heldout": gate_sides(concepts, cfg.calib_prompts, "heldout", seed + 300),
        }
    return ItdInputs(
        corpus=shapes_itd_corpus(cfg),
        concept_prompts={c: target_set(c, n, "train", seed + 100 + i).prompts for i, c in enumerate(concepts)},
        retain_prompts={r: target_set(r, n, "train", seed + 150 + i).prompts for i, r in enumerate(names)},
        retain=retain,
        gate=gate,
    )
