"""Evaluation: concept detectors with protocol cards, metrics (ASR, retained accuracy, FID, CLIP score), reports.

NudeNetDetector(preset), ImageNetClassDetector, ClipZeroShotDetector  -> detector(images) -> (N,) bool, .card()
evaluate(cfg, pipe, original, plan, model_card) -> EvalResult(card, metrics, images)   (`erasekit evaluate`)
write_report({name: result}, path)    -> self-contained HTML; markdown_table(...) for the terminal

Which detector, prompts and references a concept gets is decided by its domain (`erasekit.domains`).
"""

from erasekit.eval.classifiers import NUDITY_PRESETS, DetectorError, NudeNetDetector
from erasekit.eval.harness import EvalConfig, EvalPlan, EvalResult, evaluate
from erasekit.eval.metrics import asr, attribute_accuracy, fid_from_features, frechet_distance, rate
from erasekit.eval.report import markdown_table, write_report

__all__ = [
    "NUDITY_PRESETS",
    "DetectorError",
    "EvalConfig",
    "EvalPlan",
    "EvalResult",
    "NudeNetDetector",
    "asr",
    "attribute_accuracy",
    "evaluate",
    "fid_from_features",
    "frechet_distance",
    "markdown_table",
    "rate",
    "write_report",
]
