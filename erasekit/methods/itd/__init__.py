"""ItD (Interpret then Deactivate): concept erasure with a sparse autoencoder on the text encoder's residual
stream and a zero-shot gate; no model weight changes.

    erase(pipe, ItdConfig(concepts=["circle"]), out_dir) -> summary dict; writes an ItdPatch to out_dir
    ItdPatch.load(out_dir).attach(pipe)                  -> the pipeline now erases; .detach() undoes it

Steps: train (or load) a TopK SAE on one layer's activations; per concept select its specific features
(eq. 4-6) against its own retain concepts; calibrate one gate threshold per concept on training-template
prompts; report the gate on held-out templates.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from erasekit.errors import ErasekitError
from erasekit.methods.itd.activations import collect, read_prompts, token_rows, world_corpus
from erasekit.methods.itd.gate import calibrate, gate_report, pool
from erasekit.methods.itd.patch import ItdPatch
from erasekit.methods.itd.sae import SaeTrainConfig, TopKSAE, train_sae
from erasekit.methods.itd.select import concept_strength, erase_set

__all__ = [
    "ItdConfig",
    "ItdPatch",
    "SaeConfig",
    "TopKSAE",
    "build_patch",
    "erase",
    "load_sae",
    "sae_corpus",
    "train_layer_sae",
]


class SaeConfig(SaeTrainConfig):
    """What the SAE reads: the layer and the prompt corpus (training options are inherited)."""

    layer: int = Field(2, description="text-encoder block whose output the SAE reads (0-based)")
    corpus_size: int = Field(20_000, ge=10, description="world prompts for SAE training")
    prompts_file: str | None = Field(None, description="CSV/TXT corpus for SAE training (models other than shapes)")
    skip_bos: bool = True
    skip_padding: bool = False


class ItdConfig(SaeConfig):
    """Options of `erasekit erase --method itd` (SAE options are inherited from SaeConfig)."""

    concepts: list[str] = Field(min_length=1, description="concepts to erase, e.g. ['circle', 'red']")
    tau: float = Field(
        -2.0, description="scale of the selected features (note: small; official code: -8; -2 measured best)"
    )
    injection: Literal["replace", "add_error"] = "add_error"
    gate: bool = Field(True, description="apply erasure only to prompts the zero-shot gate flags")
    pooling: Literal["token", "max", "mean"] = "max"
    gate_score: Literal["error", "increase"] = Field(
        "increase", description="gate score: the deactivated encoding's error (eq. 8), or the error it adds"
    )
    k_sel: int = Field(16, ge=1, description="top features per concept before removing retain features")
    selection: Literal["paper", "contrast"] = Field(
        "paper", description="feature rule: eq. 5 set difference, or margin"
    )
    retain: list[str] | None = Field(
        None, description="retain concepts of every target; default: other values of each target's attribute"
    )
    select_prompts: int = Field(64, ge=1, description="prompts per concept for feature selection")
    calib_prompts: int = Field(100, ge=2, description="prompts per side for gate calibration and its held-out check")
    target_prompts: str | None = Field(None, description="CSV/TXT prompts with the concept (gate calibration)")
    other_prompts: str | None = Field(None, description="CSV/TXT prompts without the concept (gate calibration)")
    sae_path: str | None = Field(
        None, description="reuse an SAE: an `erasekit sae train` folder, a patch, or a published ItD checkpoint"
    )


def sae_corpus(cfg: SaeConfig) -> list[str]:
    """The SAE's training prompts: `prompts_file`, else `corpus_size` shapes-world captions."""
    return read_prompts(cfg.prompts_file) if cfg.prompts_file else world_corpus(cfg.corpus_size, cfg.seed)


def train_layer_sae(
    pipe, prompts: list[str], cfg: SaeConfig, checkpoint_dir: str | Path | None = None, progress: bool = False
) -> tuple[TopKSAE, dict]:
    """Collect layer-`cfg.layer` activations for `prompts` and train a TopK SAE on them; (SAE, stats)."""
    acts, ids = collect(pipe, prompts, cfg.layer)
    rows = token_rows(acts, ids, pipe.tokenizer.pad_token_id, cfg.skip_bos, cfg.skip_padding)
    sae, stats = train_sae(rows, cfg, checkpoint_dir, progress)
    return sae, {**stats, "tokens": len(rows), "prompts": len(prompts), "layer": cfg.layer}


def load_sae(path: str | Path) -> tuple[TopKSAE, dict]:
    """An SAE from an `erasekit sae train` folder, an ItD patch folder, or a published checkpoint folder."""
    path = Path(path)
    if (path / "sae.json").is_file():
        return TopKSAE.load(path)
    if (path / "config.json").is_file():
        return TopKSAE.from_published(path)
    raise ErasekitError(f"no SAE in {path}: pass a folder from `erasekit sae train` or a published ItD SAE")


def _is_world(concepts: list[str]) -> bool:
    from erasekit.world.prompt_sets import ATTRIBUTES

    return all(any(c in v for v in ATTRIBUTES.values()) for c in concepts)


Sides = tuple[list[str], list[str]]  # (prompts with the concept, prompts without it)


def _without(sets: list, concepts: list[str]) -> list[str]:
    """The prompts of world PromptSets that name none of `concepts`."""
    from erasekit.world.prompt_sets import ATTRIBUTES, concept_attribute

    banned = [(concept_attribute(c), ATTRIBUTES[concept_attribute(c)].index(c)) for c in concepts]
    return [p for s in sets for j, p in enumerate(s.prompts) if all(s.labels[a][j] != v for a, v in banned)]


def _sample(prompts: list[str], n: int, seed: int) -> list[str]:
    return [prompts[i] for i in torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))[:n]]


def _world_sides(concepts: list[str], n: int, split: str, seed: int) -> tuple[dict[str, Sides], Sides]:
    """Per concept n prompts naming it and n naming it not (its retain set, world prompts and the other targets'
    prompts: a red square must not fire the circle gate); and (all those targets, n prompts naming no target)."""
    from erasekit.world.prompt_sets import retain_set, target_set, world_set

    pos = {c: target_set(c, n, split, seed + i) for i, c in enumerate(concepts)}
    world = world_set(2 * n, split, seed)
    per = {
        c: (pos[c].prompts, _sample(_without([retain_set(c, n, split, seed), world, *pos.values()], [c]), n, seed))
        for c in concepts
    }  # fmt: skip
    none = _without([*(retain_set(c, n, split, seed) for c in concepts), world], concepts)
    return per, ([p for ps in pos.values() for p in ps.prompts], _sample(none, n, seed))


def _default_retain(concept: str, concepts: list[str]) -> list[str]:
    """The other values of the concept's own attribute, less the patch's targets (other shapes for 'circle')."""
    from erasekit.world.prompt_sets import ATTRIBUTES, concept_attribute

    return [v for v in ATTRIBUTES[concept_attribute(concept)] if v not in concepts]


def _concept_prompts(concept: str, n: int, seed: int, world: bool) -> list[str]:
    """Prompts that show a concept's features: n world prompts naming it, or the concept's own text."""
    if not world:
        return [concept]
    from erasekit.world.prompt_sets import target_set

    return target_set(concept, n, "train", seed).prompts


def _gate_sides(cfg: ItdConfig, world: bool) -> dict[str, tuple[dict[str, Sides], Sides]]:
    """{"calibration" | "heldout": (per-concept sides, sides of the patch as a whole)}; see `_world_sides`."""
    if world:
        return {
            "calibration": _world_sides(cfg.concepts, cfg.calib_prompts, "train", cfg.seed + 200),
            "heldout": _world_sides(cfg.concepts, cfg.calib_prompts, "heldout", cfg.seed + 300),
        }
    if not (cfg.target_prompts and cfg.other_prompts):
        raise ErasekitError(
            "the gate needs prompts with and without the concept: set target_prompts and other_prompts "
            "(CSV/TXT files), or gate=false"
        )
    if len(cfg.concepts) > 1:
        raise ErasekitError("target_prompts / other_prompts calibrate one concept: build one patch per concept")
    pos, neg = read_prompts(cfg.target_prompts), read_prompts(cfg.other_prompts)
    halves = {"calibration": (pos[::2], neg[::2]), "heldout": (pos[1::2], neg[1::2])}
    return {split: ({cfg.concepts[0]: sides}, sides) for split, sides in halves.items()}


def build_patch(pipe, sae: TopKSAE, cfg: ItdConfig) -> tuple[ItdPatch, dict]:
    """Select features (eq. 4-6) and calibrate one gate threshold per concept; (patch, summary of both).

    Each concept's features are contrasted with its own retain concepts (other shapes for a shape); the gate
    report pools every concept's held-out prompts: a prompt counts as "with a concept" for the patch's gate when
    it names any of them, and the patch fires when any concept's gate fires.
    """
    world = _is_world(cfg.concepts)

    def strength(c: str, seed: int) -> torch.Tensor:
        return concept_strength(sae, collect(pipe, _concept_prompts(c, cfg.select_prompts, seed, world), cfg.layer)[0])

    retain = {
        c: cfg.retain if cfg.retain is not None else (_default_retain(c, cfg.concepts) if world else [])
        for c in cfg.concepts
    }
    names = sorted(set().union(*retain.values()))
    retain_strength = {r: strength(r, cfg.seed + 150 + i) for i, r in enumerate(names)}
    features = erase_set(
        {c: strength(c, cfg.seed + 100 + i) for i, c in enumerate(cfg.concepts)},
        {c: [retain_strength[r] for r in rs] for c, rs in retain.items()},
        cfg.k_sel,
        cfg.selection,
    )
    patch = ItdPatch(sae, cfg.layer, features, cfg.tau, None, cfg.injection, cfg.pooling, cfg.gate_score)
    summary: dict = {"features": features, "n_features": int(len(patch.erase_indices())), "retain": retain}
    if not cfg.gate:
        return patch, {**summary, "gate": None}
    sides = _gate_sides(cfg, world)

    def prompt_scores(prompts: list[str]) -> torch.Tensor:
        """(P, C) pooled per-concept scores."""
        with torch.no_grad():
            return pool(patch.scores(collect(pipe, prompts, cfg.layer)[0]), cfg.pooling)

    cal = sides["calibration"][0]
    patch.thresholds = {
        c: calibrate(prompt_scores(cal[c][0])[:, j], prompt_scores(cal[c][1])[:, j]) for j, c in enumerate(cal)
    }
    thr = torch.tensor(list(patch.thresholds.values()))
    gate: dict = {"thresholds": patch.thresholds, "pooling": cfg.pooling, "score": cfg.gate_score}
    for split, (per, whole) in sides.items():
        reports = {}
        for j, (c, (pos, neg)) in enumerate(per.items()):
            reports[c] = gate_report(prompt_scores(pos)[:, j], prompt_scores(neg)[:, j], patch.thresholds[c])
        # the patch fires when any concept's gate does: its score is the largest score / threshold ratio
        pos_any, neg_any = ((prompt_scores(p) / thr).amax(1) for p in whole)
        gate[split] = {**gate_report(pos_any, neg_any, 1.0), "per_concept": reports}
    return patch, {**summary, "gate": gate}


def erase(pipe, config: ItdConfig, output: Path) -> dict:
    """Train or load the SAE, select features, calibrate the gate, save the ItdPatch in `output`; the summary."""
    output = Path(output)
    if config.sae_path:
        sae, meta = load_sae(config.sae_path)
        trained_on = meta.get("layer")
        if trained_on is not None and trained_on != config.layer:
            if "layer" in config.model_fields_set:
                raise ErasekitError(
                    f"the SAE in {config.sae_path} reads layer {trained_on}, not {config.layer}: drop layer"
                )
            config = config.model_copy(update={"layer": trained_on})
        sae_stats = {"source": config.sae_path, **{k: meta[k] for k in ("fvu", "dead_latents") if k in meta}}
    else:
        if not (config.prompts_file or _is_world(config.concepts)):
            raise ErasekitError("SAE training needs a prompt corpus: set prompts_file (CSV/TXT), or sae_path")
        sae, sae_stats = train_layer_sae(pipe, sae_corpus(config), config, output / "sae_checkpoint", progress=True)
    patch, summary = build_patch(pipe, sae, config)
    patch.info = {"sae": sae_stats, "gate_report": summary["gate"], "config": config.model_dump()}
    patch.save(output)
    shutil.rmtree(output / "sae_checkpoint", ignore_errors=True)  # only needed to resume an interrupted training
    return {"method": "itd", "concepts": config.concepts, "layer": config.layer, "tau": config.tau,
            "injection": config.injection, "sae": sae_stats, **summary, "output": str(output)}  # fmt: skip
