"""Prompt files (one reader, the format from the extension), the shapes-world sets and the content hash the
protocol card records."""

from __future__ import annotations

import pytest

from erasekit.errors import ErasekitError
from erasekit.prompts import content_hash, read_prompt_file, set_card
from erasekit.world.prompt_sets import retain_set, target_set, world_set

I2P = """prompt,evaluation_seed,evaluation_guidance,categories,nudity_percentage
"a statue, marble",101,7.5,"sexual,art",80.0
a beach at dusk,202,7.0,violence,5.0
"portrait, oil",303,6.0,sexual,45.5
"""


def test_i2p_csv_filters_and_keeps_per_row_seed_and_guidance(tmp_path) -> None:
    path = tmp_path / "i2p.csv"
    path.write_text(I2P)
    ps = read_prompt_file(path, category="sexual", min_nudity=40)
    assert ps.prompts == ["a statue, marble", "portrait, oil"]
    assert ps.seeds == [101, 303] and ps.guidance == [7.5, 6.0] and ps.source == str(path)
    assert len(read_prompt_file(path)) == 3 and len(read_prompt_file(path, limit=2)) == 2
    with pytest.raises(ErasekitError, match="relax the filter"):
        read_prompt_file(path, min_nudity=99)
    (tmp_path / "bad.csv").write_text("text,seed\nhello,1\n")
    with pytest.raises(ErasekitError, match="no column prompt"):
        read_prompt_file(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("prompt,evaluation_seed\nhello,abc\n")
    with pytest.raises(ErasekitError, match="line 2"):
        read_prompt_file(tmp_path / "nan.csv")
    with pytest.raises(ErasekitError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.csv")


def test_coco_csv_seeds_from_column_or_index(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("case_number,prompt,evaluation_seed\n0,a dog on a sofa,7\n1,two cups,8\n")
    (tmp_path / "b.csv").write_text("caption\na dog on a sofa\ntwo cups\n")
    a, b = read_prompt_file(tmp_path / "a.csv"), read_prompt_file(tmp_path / "b.csv", seed=100)
    assert a.prompts == b.prompts == ["a dog on a sofa", "two cups"]
    assert a.seeds == [7, 8] and b.seeds == [100, 101] and a.guidance is None
    assert content_hash(a) != content_hash(b)  # same prompts, different seeds: a different protocol


def test_text_file_is_one_prompt_a_line(tmp_path) -> None:
    """Anything but .csv is text: blank lines and # comments skipped, seeds seed, seed + 1, ...; a text file read
    with the same seed hashes like the CSV holding the same rows."""
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\na dog on a sofa\n\ntwo cups, on a table\nthree birds\n")
    ps = read_prompt_file(path, limit=2, seed=7)
    assert ps.prompts == ["a dog on a sofa", "two cups, on a table"]  # a comma is part of a text prompt
    assert ps.seeds == [7, 8] and ps.guidance is None and ps.name == "txt:prompts.txt"
    (tmp_path / "same.csv").write_text('prompt\na dog on a sofa\n"two cups, on a table"\n')
    assert content_hash(ps) == content_hash(read_prompt_file(tmp_path / "same.csv", seed=7))
    (tmp_path / "noext").write_text("a tench\n")
    assert read_prompt_file(tmp_path / "noext").prompts == ["a tench"]
    with pytest.raises(ErasekitError, match="I2P CSV"):
        read_prompt_file(path, category="sexual")  # filters need the CSV columns
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ErasekitError, match="holds no prompts"):
        read_prompt_file(tmp_path / "empty.txt")
    with pytest.raises(ErasekitError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")


def test_shapes_sets_are_deterministic_and_hashed() -> None:
    def sets(seed: int) -> dict:
        return {"target": target_set("circle", 6, seed=seed), "retain": retain_set("circle", 6, seed=seed),
                "world": world_set(10, seed=seed)}  # fmt: skip

    one, two = sets(3), sets(3)
    assert all("circle" in p for p in one["target"].prompts)
    assert not any("circle" in p for p in one["retain"].prompts)
    assert {k: set_card(v) for k, v in one.items()} == {k: set_card(v) for k, v in two.items()}
    assert content_hash(one["target"]) != content_hash(sets(4)["target"])
    assert one["target"].labels["shape"] == [0] * 6  # scene labels travel with the prompts
    assert len(set(one["retain"].labels["shape"])) == 4 and 0 not in one["retain"].labels["shape"]
    train = target_set("circle", 6, split="train", seed=3)
    assert not set(train.prompts) & set(one["target"].prompts)  # held-out templates are never trained on
    with pytest.raises(ErasekitError, match="unknown split"):
        target_set("circle", 6, split="test")
