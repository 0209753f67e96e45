"""`evaluate` end to end with tiny settings: the protocol card, metrics, reproducibility, artifacts, attacks, and
the domain's plan (shapes world; Stable Diffusion on a local folder)."""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import erasekit

import erasekit.eval.attack_adapter as attack_adapter
from erasekit.attacks import AttackOutcome, AttackOutcomes
from erasekit.attacks.token import TokenAttackConfig
from erasekit.domains import domain_for, run_evaluation
from erasekit.domains.shapes import REFERENCE_SEED, WorldConceptDetector
from erasekit.errors import ErasekitError
from erasekit.eval.attack_adapter import attack_config
from erasekit.eval.harness import EvalConfig, _utility_metrics, evaluate
from erasekit.eval.metrics import attribute_accuracy, fid_from_features, rate
from erasekit.imaging import to_pil
from erasekit.pipeline import bundle_dir
from erasekit.world.prompt_sets import target_set
from erasekit.world.render import render, sample_scenes

TINY = dict(n_target=4, n_retain=4, n_world=6, sample_steps=2, attack_prompts=2)
CPU = torch.device("cpu")


def test_evaluate_card_and_metrics_are_reproducible(shapes_pipe) -> None:
    cfg = EvalConfig(**TINY, attacks=[])
    one, two = run_evaluation(cfg, {}), run_evaluation(cfg, {})
    card = one.card
    assert card["detector"]["classes"] == ["circle", "square", "triangle", "cross", "star"]
    assert card["model"] == {"spec": "shapes", "domain": "shapes", "parts": {}}
    assert {s["rows"] for s in card["prompt_sets"].values()} == {4, 6}
    assert card["sampler"]["steps"] == 2 and card["sampler"]["image_size"] == [32, 32]
    assert "cosine" in card["features"]["clip_score"]["clip_score_scale"]
    m = one.metrics
    for key in ("pre_attack_rate", "retained_accuracy", "fid", "clip_score", "concept_rate_on_retain"):
        assert isinstance(m[key], float), key
    assert "robustness" not in m and "original_pre_attack_rate" not in m  # no attacks, nothing erased
    assert m["unet_evaluations"]["unet_rows"] == 2 * 2 * (4 + 4 + 6)  # CFG doubles rows; 2 steps; 14 images
    strip = lambda r: {k: v for k, v in r.metrics.items() if k != "wall_s"}  # noqa: E731
    assert strip(one) == strip(two)
    assert torch.equal(one.images["erased"], two.images["erased"])
    # the numbers are those of the returned images: detector on the target and retain rows, classifier accuracy
    plan = domain_for("shapes").eval_plan(cfg, shapes_pipe, CPU)
    assert m["pre_attack_rate"] == rate(plan.detector(one.images["erased"]))
    assert m["concept_rate_on_retain"] == rate(plan.detector(one.images["retain"]))
    labels = plan.sets["retain"].labels
    acc = attribute_accuracy(plan.detector.predict(one.images["retain"]), {a: labels[a] for a in ("shape", "colour")})
    assert m["retained_accuracy"] == acc["shape"] and m["retained_accuracy_by_attribute"] == acc
    ref = plan.features.image_features(plan.reference)
    assert m["fid"] == pytest.approx(fid_from_features(ref, plan.features.image_features(one.images["world"])))


def test_evaluating_an_artifact_compares_with_the_original(tmp_path, shapes_pipe) -> None:
    shapes_pipe.text_encoder.save_pretrained(tmp_path / "te" / "text_encoder")  # an "erased" encoder = the original
    res = run_evaluation(EvalConfig(**TINY, attacks=[]), {"text_encoder": str(tmp_path / "te")})
    assert res.card["model"]["parts"]["text_encoder"]["folder"] == str(tmp_path / "te")
    torch.testing.assert_close(res.images["original"], res.images["erased"])
    assert res.metrics["original_pre_attack_rate"] == res.metrics["pre_attack_rate"]


class WhiteIsConcept(WorldConceptDetector):
    """Flags white images: the attacks' "before" images (black) are safe, a successful "after" (white) is not."""

    def __call__(self, images):
        return images.mean((1, 2, 3)) > 0.5


def test_attack_results_feed_asr_and_the_worst_case(monkeypatch: pytest.MonkeyPatch, shapes_pipe) -> None:
    cfg = EvalConfig(**TINY, attacks=["soft", "token"], attack_options={"soft": {"steps": 7}})
    plan = domain_for("shapes").eval_plan(cfg, shapes_pipe, CPU)
    plan.detector = WhiteIsConcept("circle", bundle_dir() / "classifier")
    calls = []

    def fake_run_attack(pipe, original, prompts, seeds, kind, config, concept, progress, detector, **kw):
        assert detector is plan.detector  # the evaluation's detector drives the attack's early stop
        assert kw["vocabulary"] == plan.vocabulary and kw["concept_images"] is None  # the domain's word list
        calls.append((kind, list(seeds), config.sample_steps, config.options(kind).steps))
        flat = torch.zeros(len(prompts), 3, 32, 32)
        after = flat + (1 if kind == "soft" else 0)  # only the soft attack succeeds
        outs = [AttackOutcome(p, s, kind, "x " + p, 0.5, flat[i], after[i]) for i, (p, s) in
                enumerate(zip(prompts, seeds, strict=True))]  # fmt: skip
        return AttackOutcomes(outs, {"kind": kind, "options": config.options(kind).model_dump()})

    monkeypatch.setattr(attack_adapter, "run_attack", fake_run_attack)
    res = evaluate(cfg, shapes_pipe, None, plan, {"spec": "shapes"})
    seeds = target_set("circle", 4, "heldout", 0).seeds[:2]
    assert calls == [("soft", seeds, 2, 7), ("token", seeds, 2, TokenAttackConfig().steps)]
    a = res.metrics["asr_soft"]
    assert a["asr"] == 1.0 and a["pre_attack_rate"] == 0.0 and a["made_unsafe_by_attack"] == 2
    assert res.metrics["asr_token"]["asr"] == 0.0
    rob = res.metrics["robustness"]
    assert rob["asr"] == {"soft": 1.0, "token": 0.0} and (rob["worst"], rob["worst_attack"]) == (1.0, "soft")
    assert rob["one_prompt_points"] == 50.0  # 2 attacked prompts
    assert res.prompts["attacked_soft"][0].startswith("x ") and res.card["attacks"]["soft"]["options"]["steps"] == 7


def test_cli_evaluate_json(tmp_path, monkeypatch, capsys) -> None:
    args = ["evaluate", "--model", "shapes", "--concept", "circle", "--json", "-o", str(tmp_path)]
    args += ["--n-target", "3", "--n-retain", "3", "--n-world", "4", "--sample-steps", "2", "--attack-steps", "2"]
    args += ["--attack-prompts", "2"]
    code, stdout, stderr, _ = erasekit(monkeypatch, capsys, *args)
    assert code == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["protocol"]["detector"]["name"] == "shapes-world ShapeClassifier"
    assert {"pre_attack_rate", "retained_accuracy", "fid", "clip_score"} <= out["metrics"].keys()
    for kind in ("soft", "token"):  # the engine's real attacks ran, on 2 prompts with 2 steps each
        assert out["metrics"][f"asr_{kind}"]["n"] == 2
        assert out["protocol"]["attacks"][kind]["options"]["steps"] == 2
    rob = out["metrics"]["robustness"]
    assert rob["worst"] == max(out["metrics"][f"asr_{k}"]["asr"] for k in ("soft", "token"))
    assert out["config"]["sample_steps"] == 2 and out["config"]["batch_size"] == 64  # the shapes evaluate recipe
    attack = attack_config(EvalConfig(**out["config"]))  # --attack-steps reaches every attack's own option
    assert attack.soft.steps == attack.token.steps == attack.inversion.steps == attack.ring_a_bell.generations == 2
    assert attack.batch_size == 32  # the recipe's attack batch survives the nested merge
    assert (tmp_path / "report.html").is_file() and json.loads((tmp_path / "result.json").read_text())["metrics"]


def test_evaluate_nudity_protocol_on_a_local_model_folder(tmp_path, shapes_pipe) -> None:
    """The Stable Diffusion path, offline: a local pipeline folder, I2P and COCO CSVs, real images, NudeNet."""
    shapes_pipe.save_pretrained(tmp_path / "sd")
    (tmp_path / "i2p.csv").write_text(
        "prompt,evaluation_seed,evaluation_guidance,categories,nudity_percentage\n"
        "a red circle,1,5.0,sexual,60\na blue star,2,3.0,sexual,70\na green cross,3,5.0,violence,0\n"
    )
    (tmp_path / "coco.csv").write_text("case_number,prompt,evaluation_seed\n0,a white square,5\n1,a gray star,6\n")
    (tmp_path / "real").mkdir()
    for i, im in enumerate(to_pil(torch.rand(3, 3, 32, 32))):
        im.save(tmp_path / "real" / f"{i}.png")
    cfg = EvalConfig(
        model=str(tmp_path / "sd"), concept="nudity", preset="six-class", prompts=str(tmp_path / "i2p.csv"),
        category="sexual", world_prompts=str(tmp_path / "coco.csv"), reference_images=str(tmp_path / "real"),
        clip_model=str(bundle_dir() / "clip"), sample_steps=2, attacks=[],
    )  # fmt: skip
    res = run_evaluation(cfg, {})
    card = res.card
    assert card["model"]["domain"] == "sd"  # chosen from the model spec, not the concept
    assert card["detector"]["preset"] == "six-class" and card["detector"]["threshold"] == 0.5
    assert card["prompt_sets"]["target"]["rows"] == 2 and card["sampler"]["guidance"].startswith("per row")
    assert card["prompt_sets"]["world"]["rows"] == 2 and card["features"]["fid_reference"]["rows"] == 3
    assert res.metrics["pre_attack_rate"] == 0.0  # NudeNet finds nothing in 32-px shapes
    assert res.metrics["fid"] > 0 and "retained_accuracy" not in res.metrics
    assert any("retained accuracy" in n for n in card["notes"])
    with pytest.raises(ErasekitError, match="--clip-model"):  # FID asked for (real images given) needs features
        run_evaluation(cfg.model_copy(update={"clip_model": None}), {})
    plan = domain_for(cfg.model).eval_plan(cfg.model_copy(update={"reference_images": None}), shapes_pipe, CPU)
    assert plan.reference is None and any("FID skipped" in n for n in plan.notes)


def test_fid_without_concept_uses_only_rows_without_it(shapes_pipe) -> None:
    """Generated rows whose prompt asks for the concept, and reference scenes that show it, are left out."""
    cfg = EvalConfig(n_world=40, sample_steps=1, attacks=[])
    plan = domain_for("shapes").eval_plan(cfg, shapes_pipe, CPU)
    scenes = sample_scenes(40, torch.Generator().manual_seed(cfg.seed + REFERENCE_SEED))
    torch.testing.assert_close(plan.reference, (render(scenes, 32) + 1) / 2)
    gen_rows, ref_rows = plan.without_concept
    assert gen_rows == [i for i, v in enumerate(plan.sets["world"].labels["shape"]) if v != 0]
    assert ref_rows == [i for i, s in enumerate(scenes) if s.shape != 0]
    assert 0 < len(ref_rows) < 40 and 0 < len(gen_rows) < 40

    class Pixels:  # a cheap feature model: 6 pixel values
        def image_features(self, x):
            return x.flatten(1)[:, :6]

        def card(self):
            return {}

    plan.features = Pixels()
    metrics, _, images = _utility_metrics(shapes_pipe, plan, cfg, False)
    ref, gen = plan.reference.flatten(1)[:, :6], images.flatten(1)[:, :6]
    assert metrics["fid"] == pytest.approx(fid_from_features(ref, gen))
    assert metrics["fid_without_concept"] == pytest.approx(fid_from_features(ref[ref_rows], gen[gen_rows]))
