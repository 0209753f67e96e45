"""AdvUnlearn on the ESD engine: schedules, retain sampling, warm-up, resume and plug-and-play loading."""

from __future__ import annotations

import json

import pytest
import torch

from erasekit import load_pipeline
from erasekit.errors import ErasekitError
from erasekit.methods import default_prompts, sd_retain_prompts, shapes_retain_prompts
from erasekit.methods.advunlearn import AdvUnlearnConfig, AdvUnlearnTrainer, erase

RETAIN = ["a red square", "a blue triangle on a white background", "a green cross", "a star", "a yellow square"]


def _config(**kw) -> AdvUnlearnConfig:
    base = dict(
        concepts=["circle"], retain_prompts=RETAIN, steps=4, warmup=2, ddim_steps=6, cache_size=4,
        lr=1e-3, retain_batch=2, checkpoint_every=2, attack={"steps": 3, "lr": 1e-2},
    )  # fmt: skip
    return AdvUnlearnConfig(**{**base, **kw})


def test_retain_batches_cover_the_set_before_repeating():
    trainer = AdvUnlearnTrainer(load_pipeline("shapes"), _config(retain_batch=2))
    drawn = torch.cat([trainer.retain_indices(s) for s in range(5)]).tolist()  # 10 draws over 5 prompts
    assert sorted(drawn[:5]) == list(range(5)) and sorted(drawn[5:]) == list(range(5))
    assert torch.equal(trainer.retain_indices(3), trainer.retain_indices(3))  # a function of the step


def test_cheap_schedule_costs_fewer_unet_calls_and_counts_them(tmp_path):
    runs = {}
    for schedule in ("cheap", "faithful"):
        runs[schedule] = erase(load_pipeline("shapes"), _config(schedule=schedule), tmp_path / schedule, progress=False)
    cheap, faithful = runs["cheap"], runs["faithful"]
    # cheap: 2 warm-up iterations of 1 call, 2 attack iterations of 1 target + 3 attack + 1 outer calls
    assert cheap["unet_calls_per_step"] == pytest.approx((1 + 1 + 5 + 5) / 4)
    assert faithful["unet_calls_per_step"] > cheap["unet_calls_per_step"]
    assert cheap["xt_mode"] == "cached" and faithful["xt_mode"] == "ddim"
    info = json.loads((tmp_path / "cheap" / "erasekit.json").read_text())
    assert info["method"] == "advunlearn" and info["component"] == "text_encoder"


def test_warmup_is_esd_then_the_attack_moves_c_star():
    trainer = AdvUnlearnTrainer(load_pipeline("shapes"), _config(warmup=1))
    trainer.build_bank()
    start = trainer.adv.emb.clone()
    trainer.loss(0, torch.Generator().manual_seed(0))
    assert "attack" not in trainer.log and torch.equal(trainer.adv.emb, start)
    trainer.loss(1, torch.Generator().manual_seed(1))
    assert "attack" in trainer.log and not torch.equal(trainer.adv.emb, start)


def test_attack_pool_moves_only_the_members_the_rows_use():
    trainer = AdvUnlearnTrainer(load_pipeline("shapes"), _config(warmup=0, attack_pool=6, batch_size=2))
    trainer.build_bank()
    start = trainer.adv.emb.clone()  # (pool, k, D)
    assert start.shape[:2] == (6, trainer.slots.k)
    trainer.loss(0, torch.Generator().manual_seed(5))
    moved = (trainer.adv.emb != start).flatten(1).any(1)
    assert 1 <= int(moved.sum()) <= 2  # the two concept rows' members; the rest of the pool waits its turn


def test_killed_run_resumes_to_the_same_weights_and_c_star(tmp_path, run_killed):
    cfg = _config()
    whole = AdvUnlearnTrainer(load_pipeline("shapes"), cfg)
    whole.run(tmp_path / "whole", progress=False)

    run_killed(AdvUnlearnTrainer, 3, lambda: erase(load_pipeline("shapes"), cfg, tmp_path / "resumed", progress=False))
    resumed = AdvUnlearnTrainer(load_pipeline("shapes"), cfg)
    assert resumed.run(tmp_path / "resumed", progress=False)["resumed_from"] == 2
    assert torch.equal(whole.adv.emb, resumed.adv.emb)
    for (n, a), (_, b) in zip(whole.module.named_parameters(), resumed.module.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_default_retain_sets_and_errors():
    cfg = default_prompts(AdvUnlearnConfig(concepts=["circle"]), "shapes")
    assert len(cfg.retain_prompts) >= 100 and not any("circle" in p for p in cfg.retain_prompts)
    assert any("red" in p for p in cfg.retain_prompts)
    sd = sd_retain_prompts()
    assert len(sd) >= 250 and all(p.startswith("a photo of") for p in sd)
    banned = {"body", "naked", "nude", "shirt", "dress", "woman", "man", "skin", "underwear"}
    assert not any(banned & set(p.split()) for p in sd)
    assert shapes_retain_prompts(["red"]) and not any(" red " in f" {p} " for p in shapes_retain_prompts(["red"]))
    with pytest.raises(ErasekitError, match="empty"):
        AdvUnlearnTrainer(load_pipeline("shapes"), _config(retain_prompts=[]))


def test_published_layout_encoder_loads_plug_and_play(tmp_path):
    """A repository with the AdvUnlearn layout (<repo>/nudity_unlearned/config.json) loads as the text encoder."""
    pipe = load_pipeline("shapes")
    with torch.no_grad():
        pipe.text_encoder.final_layer_norm.bias.add_(0.25)
    pipe.text_encoder.save_pretrained(str(tmp_path / "repo" / "nudity_unlearned"))
    loaded = load_pipeline("shapes", text_encoder=tmp_path / "repo")
    assert torch.equal(loaded.text_encoder.final_layer_norm.bias, pipe.text_encoder.final_layer_norm.bias)
    explicit = load_pipeline("shapes", text_encoder=tmp_path / "repo", text_encoder_subfolder="nudity_unlearned")
    assert torch.equal(explicit.text_encoder.final_layer_norm.bias, pipe.text_encoder.final_layer_norm.bias)


def test_cli_option_layers_merge_nested_keys(tmp_path):
    from erasekit.cli.erase import merge_options, parse_sets

    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("gamma: 0.3\nattack:\n  lr: 0.01\n  k: 3\n")
    cfg = merge_options(
        AdvUnlearnConfig,
        yaml_file,
        parse_sets(["attack.k=2", "warmup=5"]),
        {"concepts": ["circle"], "attack": {"steps": 7}},
    )
    assert (cfg.gamma, cfg.warmup) == (0.3, 5)
    assert (cfg.attack.k, cfg.attack.lr, cfg.attack.steps, cfg.attack.optimizer) == (2, 0.01, 7, "signed_adam")
    with pytest.raises(ErasekitError, match="key=value"):
        parse_sets(["gamma"])


def test_shapes_recipe_fills_only_the_options_left_unset():
    shapes = AdvUnlearnConfig.SHAPES_DEFAULTS
    cfg = default_prompts(AdvUnlearnConfig(concepts=["circle"], gamma=0.0, attack={"steps": 7}), "shapes")
    assert (cfg.gamma, cfg.attack.steps) == (0.0, 7)  # what the user set wins, nested keys included
    assert (cfg.lr, cfg.steps, cfg.attack.k) == (shapes["lr"], shapes["steps"], shapes["attack"]["k"])
    assert default_prompts(cfg, "shapes") == cfg  # applying it twice changes nothing (resume compares configs)
    sd = default_prompts(AdvUnlearnConfig(concepts=["circle"]), "CompVis/stable-diffusion-v1-4")
    assert (sd.lr, sd.steps, sd.attack.k) == (1e-5, 1000, 1)  # the authors' SD defaults stay
    assert cfg.anchor == ["square"] and sd.anchor is None  # eq. 2's reference: the nearest shape, shapes world only
    assert default_prompts(AdvUnlearnConfig(concepts=["red"]), "shapes").anchor == ["orange"]
    paper = default_prompts(AdvUnlearnConfig(concepts=["circle"], anchor=None), "shapes")
    assert paper.anchor is None and set(paper.prompts) < set(cfg.prompts)  # an explicit None wins


def test_retain_null_adds_the_empty_prompt_to_every_retain_batch():
    rows = {}
    for flag in (False, True):
        trainer = AdvUnlearnTrainer(load_pipeline("shapes"), _config(warmup=1, retain_null=flag))
        trainer.build_bank()
        before = trainer.counter.rows
        trainer.loss(0, torch.Generator().manual_seed(0)).backward()
        rows[flag] = trainer.counter.rows - before
        grad = trainer.pair.text_encoder.final_layer_norm.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    assert rows[True] - rows[False] == 2  # one more row for eps_o(x|"") and one for eps_theta(x|"")
