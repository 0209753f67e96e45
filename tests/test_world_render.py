import torch

from erasekit.world.prompts import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, WORLD_WORDS, fill
from erasekit.world.render import BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, Scene, render, sample_scenes


def test_render_shapes_range_and_colours():
    scenes = [Scene(shape=s, colour=0, background=0, cx=0.5, cy=0.5, radius=0.3) for s in range(len(SHAPES))]
    img = render(scenes)
    assert img.shape == (5, 3, 32, 32)
    assert img.min() >= -1 and img.max() <= 1
    # Centre pixel has the shape's colour (red), corners the background (white).
    assert img[:, 0, 16, 16].gt(0.5).all() and img[:, 1, 16, 16].lt(-0.5).all()
    assert img[:, :, 0, 0].gt(0.9).all()
    # Every pair of shapes differs in coverage: the masks are distinct drawings.
    cover = (img[:, 1] < 0.5).float().flatten(1)
    for i in range(5):
        for j in range(i + 1, 5):
            assert (cover[i] - cover[j]).abs().sum() > 20, (SHAPES[i], SHAPES[j])


def test_sampling_is_deterministic_and_respects_fixed_attributes():
    a = sample_scenes(20, torch.Generator().manual_seed(3), shape=2)
    b = sample_scenes(20, torch.Generator().manual_seed(3), shape=2)
    assert a == b
    assert all(s.shape == 2 for s in a)
    assert {s.colour for s in a} != {a[0].colour}  # colour still varies
    assert torch.equal(render(a), render(b))


def test_templates_and_vocabulary():
    assert set(HELDOUT_TEMPLATES).isdisjoint(TRAIN_TEMPLATES)
    assert len(COLOUR_NAMES) >= 6 and len(BACKGROUND_NAMES) >= 3 and len(SHAPES) >= 5
    words = set(
        " ".join(t.format(c="", s="", b="") for t in HELDOUT_TEMPLATES + TRAIN_TEMPLATES).replace(",", " ").split()
    )
    assert words <= set(WORLD_WORDS)
    s = Scene(shape=0, colour=1, background=2, cx=0.5, cy=0.5, radius=0.3)
    assert fill("a {c} {s} on a {b} background", s) == "a green circle on a gray background"
