"""EZSD for Detectron2. Importing the package registers its datasets and components."""
import warnings

# Deprecation notices of pinned dependencies (clip imports pkg_resources; detectron2 calls
# torch.jit.script) say nothing actionable to our users and bury our one-line errors.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)

# Importing registers the builtin datasets, EZSDDatasetMapper and the model components.
from . import data, modeling  # noqa: E402,F401
from .config import add_ezsd_config  # noqa: E402
from .data import mapper  # noqa: E402,F401

__all__ = ["add_ezsd_config"]
