"""ItD (Interpret then Deactivate): concept erasure with a sparse autoencoder on the text encoder's residual
stream and a zero-shot gate; no model weight changes.

    erase(pipe, ItdConfig(concepts=["circle"]), out_dir, inputs) -> summary dict; writes an ItdPatch to out_dir
    ItdPatch.load(out_dir).attach(pipe)                          -> the pipeline now erases; .detach() undoes it

Steps: train (or load) a TopK SAE on one layer's activations over `inputs.corpus`; per concept select its
specific features (eq. 4-6) against its own retain concepts; calibrate one gate threshold per concept on the
"calibration" prompts; report the gate on the "heldout" ones. Every prompt comes in through `ItdInputs`, built by
the caller's domain (erasekit.domains.shapes_itd, erasekit.domains.sd_itd); nothing here knows a world.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from erasekit.errors import ErasekitError
from erasekit.methods.itd.activations import collect, token_rows
from erasekit.methods.itd.gate import calibrate, gate_report, pool
from erasekit.methods.itd.inputs import GATE_SPLITS, ItdInputs
from erasekit.methods.itd.patch import ItdPatch
from erasekit.methods.itd.sae import SaeTrainConfig, TopKSAE, train_sae
from erasekit.methods.itd.select import concept_strength, erase_set

__all__ = [
    "ItdConfig",
    "ItdInputs",
    "ItdPatch",
    "SaeConfig",
    "TopKSAE",
    "build_patch",
    "erase",
    "load_sae",
    "train_layer_sae",
]


class SaeConfig(SaeTrainConfig):
    """What the SAE reads: the layer and the prompt corpus (training options are inherited)."""

    layer: int = Field(2, description="text-encoder block whose output the SAE reads (0-based)")
    corpus_size: int = Field(20_000, ge=10, description="generated shapes-world prompts for SAE training")
    prompts_file: str | None = Field(None, description="CSV/TXT corpus for SAE training; default: the domain's")
    skip_bos: bool = True
    skip_padding: bool = False


class ItdConfig(SaeConfig):
    """Options of `erasekit erase --method itd` (SAE options are inherited from SaeConfig)."""

    concepts: list[str] = Field(min_length=1, description="concepts to erase, e.g. ['circle', 'red']")
    tau: float = Field(-2.0, description="scale tau of the selected features (eq. 7; the official code uses -8)")
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
        None,
        description="retain concepts of every target; default: the domain's (shapes: the attribute's other values)",
    )
    select_prompts: int = Field(64, ge=1, description="prompts per concept for feature selection (at most, from files)")
    calib_prompts: int = Field(
        100, ge=2, description="prompts per side for gate calibration and its held-out check (at most, from files)"
    )
    target_prompts: str | None = Field(
        None, description="CSV/TXT prompts with the concept (feature selection and gate); default: the domain's"
    )
    other_prompts: str | None = Field(
        None, description="CSV/TXT prompts without the concept (gate); default: the domain's"
    )
    sae_path: str | None = Field(
        None, description="reuse an SAE: an `erasekit sae train` folder, a patch, or a published ItD checkpoint"
    )


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


def build_patch(pipe, sae: TopKSAE, cfg: ItdConfig, inputs: ItdInputs) -> tuple[ItdPatch, dict]:
    """Select features (eq. 4-6) and calibrate one gate threshold per concept; (patch, summary of both).

    Each concept's features are contrasted with its own retain concepts (`inputs.retain`); the gate report pools
    every concept's held-out prompts: a prompt counts as "with a concept" for the patch's gate when it shows any
    of them, and the patch fires when any concept's gate fires.
    """
    inputs.check(cfg.concepts, cfg.gate, corpus=False)

    def strength(prompts: list[str]) -> torch.Tensor:
        return concept_strength(sae, collect(pipe, prompts, cfg.layer)[0])

    retain = {c: list(inputs.retain[c]) for c in cfg.concepts}
    retain_strength = {r: strength(inputs.retain_prompts[r]) for r in sorted(set().union(*retain.values()))}
    features = erase_set(
        {c: strength(inputs.concept_prompts[c]) for c in cfg.concepts},
        {c: [retain_strength[r] for r in rs] for c, rs in retain.items()},
        cfg.k_sel,
        cfg.selection,
    )
    patch = ItdPatch(sae, cfg.layer, features, cfg.tau, None, cfg.injection, cfg.pooling, cfg.gate_score)
    summary: dict = {"features": features, "n_features": int(len(patch.erase_indices())), "retain": retain}
    if not cfg.gate:
        return patch, {**summary, "gate": None}

    def prompt_scores(prompts: list[str]) -> torch.Tensor:
        """(P, C) pooled per-concept scores."""
        with torch.no_grad():
            return pool(patch.scores(collect(pipe, prompts, cfg.layer)[0]), cfg.pooling)

    cal = inputs.gate["calibration"][0]
    patch.thresholds = {
        c: calibrate(prompt_scores(cal[c][0])[:, j], prompt_scores(cal[c][1])[:, j]) for j, c in enumerate(cfg.concepts)
    }
    thr = torch.tensor([patch.thresholds[c] for c in cfg.concepts])
    gate: dict = {"thresholds": patch.thresholds, "pooling": cfg.pooling, "score": cfg.gate_score}
    for split in GATE_SPLITS:
        per, whole = inputs.gate[split]
        reports = {}
        for j, c in enumerate(cfg.concepts):
            reports[c] = gate_report(
                prompt_scores(per[c][0])[:, j], prompt_scores(per[c][1])[:, j], patch.thresholds[c]
            )
        # the patch fires when any concept's gate does: its score is the largest score / threshold ratio
        pos_any, neg_any = ((prompt_scores(p) / thr).amax(1) for p in whole)
        gate[split] = {**gate_report(pos_any, neg_any, 1.0), "per_concept": reports}
    return patch, {**summary, "gate": gate}


def erase(pipe, config: ItdConfig, output: Path, inputs: ItdInputs, progress: bool = True) -> dict:
    """Train (on `inputs.corpus`) or load the SAE, select features, calibrate the gate, save the ItdPatch in
    `output`; the summary. Missing inputs fail before any training."""
    output = Path(output)
    inputs.check(config.concepts, config.gate, corpus=not config.sae_path)
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
        sae, sae_stats = train_layer_sae(pipe, inputs.corpus, config, output / "sae_checkpoint", progress)
    patch, summary = build_patch(pipe, sae, config, inputs)
    patch.info = {"sae": sae_stats, "gate_report": summary["gate"], "config": config.model_dump()}
    patch.save(output)
    shutil.rmtree(output / "sae_checkpoint", ignore_errors=True)  # only needed to resume an interrupted training
    return {"method": "itd", "concepts": config.concepts, "layer": config.layer, "tau": config.tau,
            "injection": config.injection, "sae": sae_stats, **summary, "output": str(output)}  # fmt: skip
