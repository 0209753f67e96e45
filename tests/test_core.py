"""Core layer: v-prediction in the diffusion maths, atomic checkpoints, hub errors, device / dtype resolution."""

import os

import pytest
import requests
import torch
from conftest import Killed
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from huggingface_hub import errors as hub_errors
from transformers import CLIPTextConfig, CLIPTextModel

import erasekit.checkpoint as ckpt
from erasekit import ErasekitError, load_pipeline
from erasekit.checkpoint import load_checkpoint, save_checkpoint
from erasekit.diffusion import ModelPair, TrajectoryBank, ddim_partial, ddim_step, ddim_timesteps
from erasekit.pipeline import resolve_device, resolve_dtype


def _tiny_models() -> tuple[UNet2DConditionModel, CLIPTextModel]:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
    ).eval()
    te = CLIPTextModel(
        CLIPTextConfig(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    ).eval()
    return unet, te


def _scheduler(prediction_type: str) -> DDIMScheduler:
    """SD's DDIM settings (scaled-linear betas, no clipping, alpha_prev at the end = alphas_cumprod[0])."""
    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@torch.no_grad()
def test_model_pair_converts_the_prediction_to_eps_and_ddim_matches_diffusers(prediction_type):
    unet, te = _tiny_models()
    scheduler = _scheduler(prediction_type)
    pair = ModelPair.with_frozen_copy(unet, te, "text_encoder", scheduler)
    assert pair.prediction_type == prediction_type
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    t = torch.tensor([999, 500, 21])
    raw = unet(x, t, encoder_hidden_states=ctx).sample
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = raw if prediction_type == "epsilon" else a.sqrt() * raw + (1 - a).sqrt() * x
    torch.testing.assert_close(pair.eps(x, t, ctx), expected)
    torch.testing.assert_close(pair.eps_original(x, t, ctx), expected)
    e_o, e = pair.eps_joint(x, t, ctx, x, t, ctx)
    torch.testing.assert_close(e_o, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e, expected, rtol=1e-4, atol=1e-5)
    if prediction_type == "v_prediction":
        assert not torch.allclose(expected, raw, atol=1e-3)  # the conversion is not a no-op

    # one DDIM step with the converted eps = diffusers' own step on the raw output (eta 0), incl. the last step
    steps = 10
    scheduler.set_timesteps(steps)
    taus = ddim_timesteps(steps, scheduler)
    assert torch.equal(taus, scheduler.timesteps)
    for i in (0, 4, steps - 1):
        tau = int(taus[i])
        t = torch.full((3,), tau)
        out = unet(x, t, encoder_hidden_states=ctx).sample
        prev = scheduler.step(out, tau, x, eta=0.0).prev_sample
        t_prev = int(taus[i + 1]) if i + 1 < steps else -1
        mine = ddim_step(x, pair.eps(x, t, ctx), tau, t_prev, scheduler.alphas_cumprod)
        torch.testing.assert_close(mine, prev, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_v_prediction_trajectories_follow_diffusers_ddim():
    """ddim_partial and TrajectoryBank (guidance 1 = the conditional eps) walk diffusers' DDIM path on a v-model."""
    unet, te = _tiny_models()
    scheduler = _scheduler("v_prediction")
    pair = ModelPair(unet, te, unet, te).with_scheduler(scheduler)
    g = torch.Generator().manual_seed(2)
    noise, ctx, null = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 8, generator=g), torch.zeros(1, 5, 8)
    steps = 4
    reference = _scheduler("v_prediction")
    reference.set_timesteps(steps)
    path, x = [noise], noise
    for tau in reference.timesteps:
        x = reference.step(unet(x, tau, encoder_hidden_states=ctx).sample, tau, x, eta=0.0).prev_sample
        path.append(x)
    bank = TrajectoryBank(pair, scheduler, ctx, null, noise, steps=steps, guidance=1.0)
    assert not hasattr(bank, "eps_null")
    assert bank.latents.shape == bank.eps_cond.shape == (2, steps, 4, 8, 8)
    torch.testing.assert_close(bank.latents, torch.stack(path[:steps], 1), rtol=1e-4, atol=1e-5)
    stop = torch.tensor([steps, 2])
    partial = ddim_partial(pair, scheduler, ctx, null.expand(2, -1, -1), stop, noise, steps=steps, guidance=1.0)
    torch.testing.assert_close(partial, torch.stack([path[steps][0], path[2][1]]), rtol=1e-4, atol=1e-5)


def test_prediction_type_errors_are_one_line():
    unet, te = _tiny_models()
    with pytest.raises(ErasekitError, match="prediction_type 'sample' is not supported") as info:
        ModelPair(unet, te, unet, te).with_scheduler(_scheduler("sample"))
    assert "\n" not in str(info.value)
    with pytest.raises(ErasekitError, match="needs alphas_cumprod"):
        ModelPair(unet, te, unet, te, prediction_type="v_prediction")
    # a pair left at the epsilon default must not silently sample a v-model's trajectories
    ctx = torch.zeros(1, 5, 8)
    with pytest.raises(ErasekitError, match="with_scheduler"):
        TrajectoryBank(ModelPair(unet, te, unet, te), _scheduler("v_prediction"), ctx, ctx, torch.zeros(1, 4, 8, 8))


# ---- checkpoints --------------------------------------------------------------------------------------------


def _save(folder, value: float, step: int) -> None:
    m = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(m.weight, value)
    save_checkpoint(folder, {"m": m}, None, step, {"value": value})


def _load(folder) -> tuple[int, float, torch.Tensor]:
    m = torch.nn.Linear(2, 2)
    step, extra = load_checkpoint(folder, {"m": m}, None)
    return step, extra["value"], m.weight.detach()


def _die_after_staging(monkeypatch):
    """The kill hits once the staged weights are written, before the staged JSON."""
    real = ckpt.save_file

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(ckpt, "save_file", save_then_die)


@pytest.mark.parametrize(
    "kill, expected_step",
    [("staging", 1), ("before rename 0", 1), ("before rename 1", 2), ("after rename 1", 2)],
)
def test_checkpoint_killed_mid_save_loads_a_consistent_pair(tmp_path, monkeypatch, kill, expected_step):
    """Rename 0 parks the old folder, rename 1 moves the staged one in; a kill anywhere leaves one whole save."""
    folder = tmp_path / "run" / "checkpoint"
    _save(folder, 1.0, 1)
    if kill == "staging":
        _die_after_staging(monkeypatch)
    else:
        when, _, index = kill.rpartition(" ")
        real, calls = os.replace, []

        def dying_replace(src, dst):
            if when == "before rename" and len(calls) == int(index):
                raise Killed
            calls.append(real(src, dst))
            if when == "after rename" and len(calls) == int(index) + 1:
                raise Killed

        monkeypatch.setattr(ckpt.os, "replace", dying_replace)
    with pytest.raises(Killed):
        _save(folder, 2.0, 2)
    monkeypatch.undo()
    assert folder.exists() == (kill != "before rename 1")  # that one is the mid-swap state: no folder at all
    step, value, weight = _load(folder)
    assert step == expected_step and value == float(step)
    assert torch.all(weight == value)  # weights and JSON from the same save
    assert sorted(p.name for p in folder.parent.iterdir()) == ["checkpoint"]  # leftovers cleaned up
    _save(folder, 3.0, 3)
    assert _load(folder)[:2] == (3, 3.0)


def test_checkpoint_first_save_killed_leaves_no_checkpoint(tmp_path, monkeypatch):
    _die_after_staging(monkeypatch)
    with pytest.raises(Killed):
        _save(tmp_path / "ck", 1.0, 1)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ck", {"m": torch.nn.Linear(2, 2)}, None) is None
    assert list(tmp_path.iterdir()) == []


# ---- pipeline loading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        hub_errors.LocalEntryNotFoundError("not in the cache and offline"),
        hub_errors.EntryNotFoundError("no model_index.json"),
        requests.ConnectionError("connection refused"),
        hub_errors.HTTPError("connect timeout"),
        OSError("We couldn't connect to 'https://huggingface.co'"),
    ],
)
def test_hub_unreachable_says_pass_a_local_folder(monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", fail)
    with pytest.raises(ErasekitError, match="cannot load 'org/model' from the model hub.*pass the local folder") as e:
        load_pipeline("org/model")
    assert "\n" not in str(e.value)


def test_other_hub_load_errors_keep_their_message(monkeypatch):
    def fail(*args, **kwargs):
        raise ValueError("unet/config.json: cross_attention_dim must be an int")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", fail)
    with pytest.raises(ValueError, match="cross_attention_dim must be an int"):
        load_pipeline("org/model")


def test_missing_component_folders_are_one_line_errors(tmp_path):
    for kwargs in ({"text_encoder": tmp_path / "missing"}, {"unet": tmp_path / "missing"}):
        with pytest.raises(ErasekitError, match="does not exist") as info:
            load_pipeline("shapes", **kwargs)
        assert "\n" not in str(info.value)


# ---- device and dtype ---------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad, message in [("gpu", "unknown device"), ("meta", "unknown device"), ("cuda", "no CUDA")]:
        with pytest.raises(ErasekitError, match=message) as info:
            resolve_device(bad)
        assert "\n" not in str(info.value)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ErasekitError, match="does not exist"):
        resolve_device("cuda:2")


def test_resolve_dtype():
    assert resolve_dtype(None) == torch.float32
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    names |= {"fp16": torch.float16, "float16": torch.float16}
    for name, dtype in names.items():
        assert resolve_dtype(name) == dtype
        assert resolve_dtype(dtype) == dtype
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(ErasekitError, match="fp32 or bf16"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ErasekitError, match="unknown dtype"):
        resolve_dtype("fp8")
    with pytest.raises(ErasekitError, match="unknown dtype"):
        resolve_dtype(torch.int8)


def test_load_pipeline_takes_device_and_dtype_strings(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pipe = load_pipeline("shapes", device="cpu", dtype="bf16")
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.bfloat16 and pipe.device == torch.device("cpu")
    with pytest.raises(ErasekitError, match="fp32 or bf16"):
        load_pipeline("shapes", dtype="fp16")
    with pytest.raises(ErasekitError, match="no CUDA"):
        load_pipeline("shapes", device="cuda")
