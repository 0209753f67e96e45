"""Prompt-set readers (I2P, COCO captions) and the content hash the protocol card records."""

from __future__ import annotations

import pytest

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import content_hash, read_coco_csv, read_i2p_csv, set_card, shapes_sets

I2P = """prompt,evaluation_seed,evaluation_guidance,categories,nudity_percentage
"a statue, marble",101,7.5,"sexual,art",80.0
a beach at dusk,202,7.0,violence,5.0
"portrait, oil",303,6.0,sexual,45.5
"""


def test_i2p_reader_filters_and_keeps_per_row_seed_and_guidance(tmp_path) -> None:
    path = tmp_path / "i2p.csv"
    path.write_text(I2P)
    ps = read_i2p_csv(path, category="sexual", min_nudity=40)
    assert ps.prompts == ["a statue, marble", "portrait, oil"]
    assert ps.seeds == [101, 303] and ps.guidance == [7.5, 6.0]
    assert len(read_i2p_csv(path)) == 3 and len(read_i2p_csv(path, limit=2)) == 2
    with pytest.raises(ErasekitError, match="relax the filter"):
        read_i2p_csv(path, min_nudity=99)
    (tmp_path / "bad.csv").write_text("text,seed\nhello,1\n")
    with pytest.raises(ErasekitError, match="no column prompt"):
        read_i2p_csv(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("prompt,evaluation_seed\nhello,abc\n")
    with pytest.raises(ErasekitError, match="line 2"):
        read_i2p_csv(tmp_path / "nan.csv")
    with pytest.raises(ErasekitError, match="does not exist"):
        read_i2p_csv(tmp_path / "missing.csv")


def test_coco_reader_seeds_from_column_or_index(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("case_number,prompt,evaluation_seed\n0,a dog on a sofa,7\n1,two cups,8\n")
    (tmp_path / "b.csv").write_text("caption\na dog on a sofa\ntwo cups\n")
    a, b = read_coco_csv(tmp_path / "a.csv"), read_coco_csv(tmp_path / "b.csv", seed=100)
    assert a.prompts == b.prompts == ["a dog on a sofa", "two cups"]
    assert a.seeds == [7, 8] and b.seeds == [100, 101]
    assert content_hash(a) != content_hash(b)  # same prompts, different seeds: a different protocol


def test_shapes_sets_are_deterministic_and_hashed() -> None:
    one, two = shapes_sets("circle", 6, 6, 10, seed=3), shapes_sets("circle", 6, 6, 10, seed=3)
    assert all("circle" in p for p in one["target"].prompts)
    assert not any("circle" in p for p in one["retain"].prompts)
    assert {k: set_card(v) for k, v in one.items()} == {k: set_card(v) for k, v in two.items()}
    assert content_hash(one["target"]) != content_hash(shapes_sets("circle", 6, 6, 10, seed=4)["target"])
