"""The prompts ItD needs besides the pipeline and its config, handed in by the caller's domain (shapes, SD).

    ItdInputs(corpus, concept_prompts, retain_prompts, retain, gate)
    inputs.check(concepts, gate=True, corpus=True)   -> raises a one-line ErasekitError for a missing piece

`corpus` trains the SAE (eq. 3); `concept_prompts` and `retain_prompts` give the strengths s_C of the targets and
of their retain concepts (eq. 4-5); `gate` holds, per split ("calibration" sets the thresholds, "heldout" reports
them), every concept's (with, without) prompts and the same pair for the patch as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from erasekit.errors import ErasekitError

Sides = tuple[list[str], list[str]]  # (prompts with the concept, prompts without it)
GATE_SPLITS = ("calibration", "heldout")


@dataclass
class ItdInputs:
    """What ItD reads besides the pipeline: SAE corpus, per-concept prompts, retain concepts and gate prompts."""

    corpus: list[str]
    concept_prompts: dict[str, list[str]]
    retain_prompts: dict[str, list[str]]
    retain: dict[str, list[str]]
    gate: dict[str, tuple[dict[str, Sides], Sides]] | None = None

    def check(self, concepts: list[str], gate: bool = True, corpus: bool = True) -> None:
        """Raise a one-line ErasekitError for the first piece `concepts` lack: the corpus (when `corpus`, i.e. the
        SAE is trained), selection prompts, retain prompts, or gate prompts (when `gate`)."""
        if corpus and not self.corpus:
            raise ErasekitError("SAE training needs a prompt corpus: set prompts_file (CSV/TXT), or sae_path")
        for c in concepts:
            if not self.concept_prompts.get(c):
                raise ErasekitError(f"no prompts that show '{c}' for feature selection: set target_prompts")
            if c not in self.retain:
                raise ErasekitError(f"no retain concepts given for '{c}': set retain (an empty list is allowed)")
            lacking = [r for r in self.retain[c] if not self.retain_prompts.get(r)]
            if lacking:
                raise ErasekitError(f"no prompts for retain concept(s) {lacking} of '{c}': set retain to others")
        if not gate:
            return
        missing = [c for c in concepts if not self._has_gate_sides(c)]
        if missing:
            raise ErasekitError(
                f"the gate needs prompts with and without {missing}: set target_prompts and other_prompts "
                "(CSV/TXT files), or gate=false"
            )

    def _has_gate_sides(self, concept: str) -> bool:
        """Whether both gate splits hold non-empty (with, without) prompts for `concept` and the whole patch."""
        if self.gate is None:
            return False
        for split in GATE_SPLITS:
            per, whole = self.gate.get(split, ({}, ([], [])))
            if not (all(per.get(concept, ([], []))) and all(whole)):
                return False
        return True
