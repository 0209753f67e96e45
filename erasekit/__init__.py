"""erasekit: robust concept erasure for text-to-image diffusion models (ESD, AdvUnlearn, ItD).

The public entry points are imported lazily, so `import erasekit.cli` stays light until a command runs.
"""

import logging
from importlib import import_module
from typing import Any

from erasekit.errors import ErasekitError

# erasekit does not use torchvision (its wheels do not load with the pinned torch); transformers' PIL image
# processors are the ones we want, so its notice that it fell back to them is dropped from every command's output.
logging.getLogger("transformers.utils.import_utils").addFilter(
    lambda record: "requires torchvision" not in record.getMessage()
)

__all__ = ["ErasekitError", "generate", "load_pipeline"]
__version__ = "0.1.0"

_LAZY = {"generate": "erasekit.generation", "load_pipeline": "erasekit.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'erasekit' has no attribute '{name}'")
