"""Evaluation: concept detectors with protocol cards, metrics (ASR, retained accuracy, FID, CLIP score), reports.

make_detector(concept, preset)        -> detector(images) -> (N,) bool, detector.card()
evaluate(EvalConfig(...))             -> EvalResult(card, metrics, images)     (`erasekit evaluate`)
run_bench(BenchConfig(...), folder)   -> {row: EvalResult}                     (`erasekit bench`)
write_report({name: result}, path)    -> self-contained HTML; markdown_table(...) for the terminal
"""

from erasekit.eval.bench import BenchConfig, run_bench
from erasekit.eval.classifiers import NUDITY_PRESETS, DetectorError, make_detector
from erasekit.eval.harness import EvalConfig, EvalResult, evaluate
from erasekit.eval.metrics import asr, attribute_accuracy, fid_from_features, frechet_distance, rate
from erasekit.eval.report import markdown_table, write_report

__all__ = [
    "NUDITY_PRESETS",
    "BenchConfig",
    "DetectorError",
    "EvalConfig",
    "EvalResult",
    "asr",
    "attribute_accuracy",
    "evaluate",
    "fid_from_features",
    "frechet_distance",
    "make_detector",
    "markdown_table",
    "rate",
    "run_bench",
    "write_report",
]
