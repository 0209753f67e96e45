"""AdvUnlearn on the ESD engine: schedules, retain sampling, warm-up, resume and plug-and-play loading."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from erasekit import load_pipeline
from erasekit.config import load_recipe
from erasekit.domains import domain_for, method_config
from erasekit.domains import sd as sd_domain
from erasekit.domains import shapes as shapes_domain
from erasekit.errors import ErasekitError
from erasekit.methods.advunlearn import AdvUnlearnConfig, AdvUnlearnTrainer, erase
from erasekit.text import Slots, encode_injected

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
    assert cheap["xt_mode"] == "cached" and faithful["xt_mode"] == "ddim"  # the schedule decides where x_t comes from
    with pytest.raises(ValidationError, match="xt_mode"):  # no second knob that could disagree with it
        _config(xt_mode="ddim")
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
    assert start.shape[:2] == (6, 1)  # every member at attack.k
    trainer.loss(0, torch.Generator().manual_seed(5))
    moved = (trainer.adv.emb != start).flatten(1).any(1)
    assert 1 <= int(moved.sum()) <= 2  # the two concept rows' members; the rest of the pool waits its turn


def test_attack_widths_give_each_member_its_own_number_of_tokens():
    cfg = _config(warmup=0, attack_pool=4, attack_widths=[1, 3], batch_size=4)
    trainer = AdvUnlearnTrainer(load_pipeline("shapes"), cfg)
    trainer.build_bank()
    assert trainer.width.tolist() == [1, 3, 1, 3] and trainer.adv.emb.shape[1] == 3  # stored at the widest k
    start = trainer.adv.emb.clone()
    g = torch.Generator().manual_seed(0)
    x, t, prompt = trainer.sample_xt(4, g)
    ctx = trainer.concept_context(0, x, t, prompt, torch.Generator().manual_seed(3))
    rows = trainer.pool_rows(4, torch.Generator().manual_seed(3))  # the members concept_context drew
    assert set(trainer.width[rows].tolist()) == {1, 3}  # this draw mixes both widths
    narrow = trainer.width == 1
    assert torch.equal(trainer.adv.emb[narrow, 1:], start[narrow, 1:])  # a 1-token member's unused slots stay
    assert not torch.equal(trainer.adv.emb[rows], start[rows])
    for b in range(4):  # each row is its prompt with its member's first k tokens in front, k its member's width
        k = int(trainer.width[rows[b]])
        slots = trainer.slots[k]
        one = Slots(slots.ids[prompt[b : b + 1]], slots.positions[prompt[b : b + 1]], slots.mode)
        expected = encode_injected(trainer.pair.text_encoder, one, trainer.adv.emb[rows[b : b + 1], :k])
        assert torch.allclose(ctx[b : b + 1], expected, atol=1e-5)
    with pytest.raises(ValidationError, match="attack_pool"):
        _config(attack_pool=2, attack_widths=[1, 3, 8])


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
    cfg, _ = method_config(domain_for("shapes"), "advunlearn", ["circle"])
    assert cfg.retain_prompts == shapes_domain.retain_prompts(["circle"])  # filled in by the shapes domain
    assert len(cfg.retain_prompts) >= 100 and not any("circle" in p for p in cfg.retain_prompts)
    assert any("red" in p for p in cfg.retain_prompts)
    sd = sd_domain.retain_prompts()
    assert len(sd) >= 250 and all(p.startswith("a photo of") for p in sd)
    banned = {"body", "naked", "nude", "shirt", "dress", "woman", "man", "skin", "underwear"}
    assert not any(banned & set(p.split()) for p in sd)
    assert method_config(domain_for("CompVis/stable-diffusion-v1-4"), "advunlearn", ["nudity"])[0].retain_prompts == sd
    red = shapes_domain.retain_prompts(["red"])
    assert red and not any(" red " in f" {p} " for p in red)
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


def test_shapes_recipe_fills_only_the_options_left_unset():
    shapes = domain_for("shapes")
    recipe = load_recipe("shapes/advunlearn")
    cfg, name = method_config(shapes, "advunlearn", ["circle"], sets={"attack": {"steps": 7}}, flags={"gamma": 0.0})
    assert name == "shapes/advunlearn" and (cfg.gamma, cfg.attack.steps) == (0.0, 7)  # what the user set wins
    assert (cfg.lr, cfg.steps, cfg.attack.k) == (recipe["lr"], recipe["steps"], recipe["attack"]["k"])
    assert shapes.fill("advunlearn", cfg) == cfg  # applying it twice changes nothing (resume compares configs)
    sd, _ = method_config(domain_for("CompVis/stable-diffusion-v1-4"), "advunlearn", ["church"])
    assert (sd.lr, sd.steps, sd.attack.k) == (1e-5, 1000, 1)  # the authors' SD defaults
    assert cfg.anchor == ["square"] and sd.anchor is None  # eq. 2's reference: the nearest shape, shapes world only
    assert method_config(shapes, "advunlearn", ["red"])[0].anchor == ["orange"]
    paper, _ = method_config(shapes, "advunlearn", ["circle"], sets={"anchor": None})
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
