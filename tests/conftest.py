import os

import pytest
import torch

# Tests run on 2 cores beside other work; one thread avoids oversubscription and keeps results stable.
torch.set_num_threads(int(os.environ.get("ERASEKIT_TEST_THREADS", "2")))
# CLI child processes inherit this, so they do not oversubscribe the cores either.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("ERASEKIT_TEST_THREADS", "2"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_pipe():
    from erasekit import load_pipeline

    return load_pipeline("shapes")


class Killed(Exception):
    """Stands for a process killed in the middle of a training run."""


@pytest.fixture
def run_killed(monkeypatch):
    """run(cls, step, fn): call fn() with cls.loss dying at `step`, as a kill would; then undo the patch."""

    def run(cls, step, fn):
        original = cls.loss

        def dying(self, s, g):
            if s == step:
                raise Killed
            return original(self, s, g)

        monkeypatch.setattr(cls, "loss", dying)
        with pytest.raises(Killed):
            fn()
        monkeypatch.setattr(cls, "loss", original)

    return run
