"""ESD engine: x_t sources, parameter selection, resume, artifacts and bad inputs (tiny settings, bundled world)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import PNDMScheduler
from transformers import CLIPTextModel
from typer.testing import CliRunner

from erasekit import load_pipeline
from erasekit.checkpoint import save_checkpoint
from erasekit.cli import _register_commands, app
from erasekit.diffusion import BankCache, ModelPair, TrajectoryBank, UnetCounter, ddim_partial, ddim_timesteps
from erasekit.domains import domain_for, method_config
from erasekit.domains.shapes import concept_prompts
from erasekit.errors import ErasekitError
from erasekit.methods.esd import EsdConfig, EsdTrainer, erase
from erasekit.methods.trainable import select_parameters
from erasekit.text import encode, token_ids
from erasekit.world.render import BACKGROUND_NAMES, COLOUR_NAMES

TINY = dict(concepts=["circle"], steps=4, ddim_steps=4, lr=1e-3, checkpoint_every=2, cache_size=4)


def test_bank_matches_partial_ddim_and_counts_calls():
    pipe = load_pipeline("shapes")
    pair = ModelPair(pipe.unet, pipe.text_encoder, pipe.unet, pipe.text_encoder)
    ids = token_ids(pipe.tokenizer, ["a circle", "a red square"])
    with torch.no_grad():
        ctx, null = encode(pipe.text_encoder, ids), encode(pipe.text_encoder, token_ids(pipe.tokenizer, [""]))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    counter = UnetCounter().attach(pipe.unet)
    bank = TrajectoryBank(pair, pipe.scheduler, ctx, null, noise, steps=6, guidance=3.0)
    assert (counter.calls, counter.rows) == (6, 24)  # one CFG call (2 x 2 rows) per DDIM step
    stop = torch.tensor([3, 5])
    x = ddim_partial(pair, pipe.scheduler, ctx, null.expand(2, -1, -1), stop, noise, steps=6, guidance=3.0)
    assert counter.calls == 6 + 5  # runs max(stop) steps
    torch.testing.assert_close(x, bank.latents[torch.arange(2), stop], rtol=1e-4, atol=1e-5)
    assert torch.equal(bank.latents[:, 0], noise)


def test_trainers_on_one_original_model_share_equal_banks_and_rebuild_the_others():
    """A UNet trainer after a text-encoder trainer on the same original model (the robust method's stages) takes
    the banks already built, with no UNet call; another seed, other prompts or another original UNet build anew."""
    cfg = {**TINY, "cache_size": 2, "gamma": 1.0, "retain_prompts": ["a red square", "a blue star"]}
    banks = BankCache()
    first = EsdTrainer(load_pipeline("shapes"), EsdConfig(**cfg, component="text_encoder", part="attn"), banks=banks)
    first.build_bank()
    pipe = load_pipeline("shapes")
    second = EsdTrainer(pipe, EsdConfig(**cfg, component="unet", part="xattn"), banks=banks)
    calls = second.counter.calls
    second.build_bank()
    assert second.counter.calls == calls and second.bank is first.bank and second.retain_bank is first.retain_bank
    alone = EsdTrainer(load_pipeline("shapes"), EsdConfig(**cfg))
    alone.build_bank()  # what the second trainer would have built on its own: the same trajectories
    assert torch.equal(alone.bank.latents, second.bank.latents)
    assert torch.equal(alone.retain_bank.latents, second.retain_bank.latents)

    reseeded = EsdTrainer(load_pipeline("shapes"), EsdConfig(**{**cfg, "seed": 1}), banks=banks)
    reseeded.build_bank()
    assert reseeded.bank is not first.bank and not torch.equal(reseeded.bank.latents, first.bank.latents)
    other = EsdTrainer(load_pipeline("shapes"), EsdConfig(**{**cfg, "prompts": ["a green circle"]}), banks=banks)
    other.build_bank()
    assert other.bank is not first.bank and other.retain_bank is first.retain_bank
    changed = load_pipeline("shapes")
    with torch.no_grad():
        next(changed.unet.parameters()).add_(1e-3)  # another original UNet, same prompts and seed
    moved = EsdTrainer(changed, EsdConfig(**cfg), banks=banks)
    calls = moved.counter.calls
    moved.build_bank()
    assert moved.bank is not first.bank and moved.counter.calls > calls


@pytest.mark.parametrize(("component", "part"), [("unet", "xattn"), ("text_encoder", "attn")])
def test_esd_trains_only_the_chosen_part_and_saves_it(tmp_path, component, part):
    pipe = load_pipeline("shapes")
    before = {n: p.detach().clone() for n, p in getattr(pipe, component).named_parameters()}
    cfg = EsdConfig(**TINY, component=component, part=part, xt_mode="cached")
    trainer = EsdTrainer(pipe, cfg)
    frozen = trainer.pair.unet_o if component == "unet" else trainer.pair.text_encoder_o
    summary = trainer.run(tmp_path, progress=False)
    keep = "attn2" if part == "xattn" else "self_attn"
    for n, p in getattr(pipe, component).named_parameters():
        assert torch.equal(p, before[n]) != (keep in n), n  # changed exactly where selected
    for n, p in frozen.named_parameters():
        assert torch.equal(p, before[n])  # the frozen original copy never moves
    assert summary["unet_calls"] > 0 and summary["unet_calls_per_step"] == (2.0 if component == "unet" else 1.0)
    info = json.loads((tmp_path / "erasekit.json").read_text())
    assert info["component"] == component and info["config"]["part"] == part
    assert not (tmp_path / ("unet" if component == "text_encoder" else "text_encoder")).exists()
    loaded = load_pipeline("shapes", **{component: tmp_path})
    for n, p in getattr(loaded, component).named_parameters():
        assert torch.equal(p, dict(getattr(pipe, component).named_parameters())[n])


def test_esd_pushes_concept_eps_toward_the_target(tmp_path):
    """After training, eq. 3's loss on fixed x_t is lower than before (ESD on the text encoder, high lr)."""
    pipe = load_pipeline("shapes")
    cfg = EsdConfig(**{**TINY, "steps": 25, "lr": 3e-3}, component="text_encoder", part="all", xt_mode="cached")
    trainer = EsdTrainer(pipe, cfg)
    trainer.build_bank()
    g = torch.Generator().manual_seed(5)
    x, t, prompt = trainer.sample_xt(16, g)

    def loss() -> float:
        with torch.no_grad():
            return trainer.objective(x, t, prompt, trainer.context(trainer.ids[prompt]), None).item()

    start = loss()
    trainer.run(tmp_path, progress=False)
    end = loss()
    assert end < 0.8 * start


def test_retain_term_rides_in_the_same_unet_call_and_is_off_by_default(tmp_path):
    """gamma > 0 adds eq. 6's retain rows to the one call per model (cached: 2 calls a step either way)."""
    retain = ["a red square", "a blue star", "a green cross"]
    runs = {}
    for gamma in (0.0, 1.0):
        cfg = EsdConfig(**TINY, xt_mode="cached", gamma=gamma, retain_prompts=retain, retain_batch=2, retain_null=True)
        runs[gamma] = erase(load_pipeline("shapes"), cfg, tmp_path / str(gamma), progress=False)
    assert runs[0.0]["unet_calls_per_step"] == runs[1.0]["unet_calls_per_step"] == 2
    assert runs[1.0]["unet_rows_per_step"] == runs[0.0]["unet_rows_per_step"] + 2 * 3  # (2 retain + "") x 2 models
    assert "last_retain" in runs[1.0] and "last_retain" not in runs[0.0]
    shapes = domain_for("shapes")
    paper, _ = method_config(shapes, "esd", ["circle"], flags={"gamma": 0.0})
    assert paper.retain_prompts == [] and method_config(shapes, "esd", ["circle"])[0].gamma == 10.0
    with pytest.raises(ErasekitError, match="empty"):
        EsdTrainer(load_pipeline("shapes"), EsdConfig(**TINY, gamma=1.0))


def test_anchor_replaces_the_concept_word_in_eq2_reference(tmp_path):
    """anchor=None: eq. 2's reference is the empty prompt; words: the prompt with each word for the concept.
    With the concept itself as anchor the target is eps_o(x_t|c) whatever eta, so the start loss is 0."""
    prompts = ["a red circle on a black background", "circle", "a circled square"]
    cfg = EsdConfig(**TINY, prompts=prompts, xt_mode="cached", eta=3.0)
    trainer = EsdTrainer(load_pipeline("shapes"), cfg)
    assert torch.equal(trainer.anchor_o, trainer.null_o.expand(1, 3, -1, -1))
    dropped = EsdTrainer(load_pipeline("shapes"), EsdConfig(**{**cfg.model_dump(), "anchor": ""}))
    assert dropped.anchor_prompts() == [["a red on a black background", "", "a circled square"]]
    two = EsdTrainer(load_pipeline("shapes"), EsdConfig(**{**cfg.model_dump(), "anchor": ["square", ""]}))
    assert [p[0] for p in two.anchor_prompts()] == ["a red square on a black background", "a red on a black background"]
    torch.testing.assert_close(two.anchor_o[1], dropped.anchor_o[0])
    same = EsdTrainer(load_pipeline("shapes"), EsdConfig(**{**cfg.model_dump(), "anchor": ["circle", "circle"]}))
    torch.testing.assert_close(same.anchor_o, same.ctx_o.expand(2, -1, -1, -1))
    losses = []
    for t in (trainer, same):
        t.build_bank()
        x, ts, prompt = t.sample_xt(4, torch.Generator().manual_seed(1))
        with torch.no_grad():
            losses.append(t.objective(x, ts, prompt, t.context(t.ids[prompt]), None).item())
    assert losses[1] < 1e-8 < losses[0]
    with pytest.raises(ErasekitError, match="name the concept"):
        EsdTrainer(
            load_pipeline("shapes"), EsdConfig(**{**cfg.model_dump(), "anchor": "", "prompts": ["a red square"]})
        )
    with pytest.raises(ValueError, match="at least 1"):
        EsdConfig(**TINY, anchor=[])


def test_anchored_shapes_runs_also_train_on_world_prompts():
    """Without an anchor the shapes world trains on the bare concept; with one, prompts naming colours and
    backgrounds join (the anchor keeps those words in eq. 2's reference)."""
    bare, anchored = concept_prompts(["circle"]), concept_prompts(["circle"], anchored=True)
    shapes = domain_for("shapes")
    assert method_config(shapes, "esd", ["circle"])[0].prompts == bare  # the domain fills them in
    assert method_config(shapes, "esd", ["circle"], flags={"anchor": ""})[0].prompts == anchored
    assert all("circle" in p for p in bare + anchored) and set(bare) < set(anchored)
    words = {w for p in anchored for w in p.replace(",", "").split()}
    assert not set(COLOUR_NAMES) & {w for p in bare for w in p.split()}
    assert set(COLOUR_NAMES) <= words and set(BACKGROUND_NAMES) <= words


@pytest.mark.parametrize("ema", [None, 0.9])
def test_killed_run_resumes_to_the_same_weights(tmp_path, run_killed, ema):
    cfg = EsdConfig(**TINY, component="text_encoder", part="all", xt_mode="ddim", ema=ema)
    pipe = load_pipeline("shapes")
    erase(pipe, cfg, tmp_path / "whole", progress=False)

    killed = load_pipeline("shapes")
    run_killed(EsdTrainer, 3, lambda: erase(killed, cfg, tmp_path / "resumed", progress=False))
    resumed = load_pipeline("shapes")
    summary = erase(resumed, cfg, tmp_path / "resumed", progress=False)
    assert summary["resumed_from"] == 2
    for (n, a), (_, b) in zip(
        pipe.text_encoder.named_parameters(), resumed.text_encoder.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), n


def test_ema_artifact_holds_the_moving_average_of_the_iterates(tmp_path, monkeypatch):
    """With `ema` d the artifact is w_1 averaged on by w_n with weight 1 - min(d, n / (n + 9)) (diffusers' ramp)."""
    cfg = EsdConfig(**TINY, component="text_encoder", part="attn", xt_mode="cached", ema=0.5)
    pipe = load_pipeline("shapes")
    trainer = EsdTrainer(pipe, cfg)
    iterates = []
    step = torch.optim.Adam.step

    def recording(self, *a, **k):
        out = step(self, *a, **k)
        iterates.append([p.detach().clone() for p in trainer.params])
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    trainer.run(tmp_path, progress=False)
    expected = iterates[0]
    for n, weights in enumerate(iterates[1:], start=2):
        d = min(0.5, n / (n + 9))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights, strict=True)]
    assert len(iterates) == cfg.steps and not torch.equal(iterates[-1][0], expected[0])
    saved = dict(CLIPTextModel.from_pretrained(tmp_path / "text_encoder").named_parameters())
    names = [n for n, _ in select_parameters(pipe.text_encoder, "text_encoder", "attn", None)]
    for name, live, e in zip(names, trainer.params, expected, strict=True):
        torch.testing.assert_close(live.detach(), e, rtol=1e-5, atol=1e-6)  # `pipe` holds the average too
        torch.testing.assert_close(saved[name], e, rtol=1e-5, atol=1e-6)


def test_checkpoint_from_another_architecture_is_a_clear_error(tmp_path):
    pipe = load_pipeline("shapes")
    save_checkpoint(tmp_path / "checkpoint", {"trained": torch.nn.Linear(3, 3)}, None, 2, {})
    with pytest.raises(ErasekitError, match="another architecture"):
        erase(pipe, EsdConfig(**TINY), tmp_path, progress=False)


def test_checkpoint_of_other_options_is_refused(tmp_path):
    erase(load_pipeline("shapes"), EsdConfig(**TINY, component="text_encoder", part="all"), tmp_path, progress=False)
    other = EsdConfig(**TINY, component="text_encoder", part="all", eta=2.0)
    with pytest.raises(ErasekitError, match="another run"):
        erase(load_pipeline("shapes"), other, tmp_path, progress=False)


def test_bad_inputs_are_one_line_errors(tmp_path):
    pipe = load_pipeline("shapes")
    with pytest.raises(ErasekitError, match="not a word this tokenizer knows"):
        EsdTrainer(pipe, EsdConfig(concepts=["circel"]))
    with pytest.raises(ErasekitError, match="too long|needs"):
        EsdTrainer(pipe, EsdConfig(concepts=["circle"], prompts=["circle " * 30]))
    with pytest.raises(ErasekitError, match="layers"):
        EsdTrainer(pipe, EsdConfig(concepts=["circle"], component="text_encoder", part="all", layers=[7]))
    with pytest.raises(ErasekitError, match="empty"):
        token_ids(pipe.tokenizer, [])


def test_cli_erase_and_its_errors(tmp_path):
    _register_commands()
    runner = CliRunner()
    out = tmp_path / "run"
    tiny = ["--steps", "2", "--xt-mode", "cached", "--set", "cache_size=2", "--set", "ddim_steps=3", "--json"]
    res = runner.invoke(app, ["erase", "--method", "esd", "--concept", "circle", "-o", str(out), *tiny])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index('{"') :])
    assert summary["steps"] == 2 and (out / "unet" / "config.json").is_file()
    assert summary["recipe"] == "shapes/esd"  # the domain's recipe for the method
    info = json.loads((out / "erasekit.json").read_text())
    assert info["config_sha256"] == summary["config_sha256"] and info["config"]["gamma"] == 10.0
    assert (info["config"]["cache_size"], info["config"]["ddim_steps"]) == (2, 3)  # --set reached the trainer
    paper = tmp_path / "paper"
    res = runner.invoke(
        app,
        ["erase", "--method", "esd", "--concept", "circle", "-o", str(paper), *tiny, "--recipe", "shapes/esd-paper"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((paper / "erasekit.json").read_text())["config"]["gamma"] == 0.0
    for bad, msg in (
        (["--concept", "dgo"], "not a shapes-world concept"),
        (["--concept", "circle", "--set", "nope=1"], "unknown option"),
        (["--concept", "circle", "--method", "zzz"], "unknown method"),
    ):
        base = ["erase", "--method", "esd", "-o", str(tmp_path / "bad")]
        res = runner.invoke(app, [*base, *bad])
        assert res.exit_code != 0 and msg in str(res.exception), res.output


def test_x_t_always_uses_ddim_timesteps():
    """SD hub pipelines ship PNDM; the x_t schedule is DDIM's whatever the pipeline's scheduler is."""
    pndm = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    assert ddim_timesteps(5, pndm).tolist() == [801, 601, 401, 201, 1]


def test_bf16_runs_the_frozen_parts_in_bf16_and_keeps_the_trained_part_fp32(tmp_path):
    pipe = load_pipeline("shapes")
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if "attn2" in n}
    trainer = EsdTrainer(pipe, EsdConfig(**{**TINY, "steps": 2}, xt_mode="cached"), dtype=torch.bfloat16)
    summary = trainer.run(tmp_path, progress=False)
    assert trainer.pair.unet_o.dtype == trainer.pair.text_encoder.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.params)  # Adam on bf16 weights would lose small updates
    assert any(not torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters() if n in before)
    assert math.isfinite(summary["last_loss"])


def test_gradient_checkpointing_changes_memory_not_the_result(tmp_path):
    weights = {}
    for flag in (False, True):
        pipe = load_pipeline("shapes")
        erase(pipe, EsdConfig(**{**TINY, "steps": 2}, gradient_checkpointing=flag), tmp_path / str(flag), False)
        assert pipe.unet.is_gradient_checkpointing == flag
        weights[flag] = {n: p.detach() for n, p in pipe.unet.named_parameters() if "attn2" in n}
    for n, w in weights[False].items():
        torch.testing.assert_close(weights[True][n], w, rtol=1e-5, atol=1e-6)
