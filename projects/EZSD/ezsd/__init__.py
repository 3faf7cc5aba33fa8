"""EZSD for Detectron2. Importing the package registers its datasets and components."""
from . import data  # noqa: F401  (registers the builtin open-vocabulary datasets)
from .config import add_ezsd_config

__all__ = ["add_ezsd_config"]
