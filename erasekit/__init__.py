"""erasekit: robust concept erasure for text-to-image diffusion models (ESD, AdvUnlearn, ItD).

The public entry points are imported lazily, so `import erasekit.cli` stays light until a command runs.
"""

from importlib import import_module
from typing import Any

from erasekit.errors import ErasekitError

__all__ = ["ErasekitError", "generate", "load_pipeline"]
__version__ = "0.1.0"

_LAZY = {"generate": "erasekit.generation", "load_pipeline": "erasekit.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'erasekit' has no attribute '{name}'")
