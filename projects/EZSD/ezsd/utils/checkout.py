"""Files of the source checkout (bundled configs, weights and tools), for the runners that use
them by default (benchmarks, the ShapesOVD ablation). The package lies at projects/EZSD/ezsd."""

import os

__all__ = ["REPO", "checkout_path"]

_HERE = os.path.dirname(os.path.abspath(__file__))  # REPO/projects/EZSD/ezsd/utils
REPO = os.path.abspath(os.path.join(_HERE, "..", "..", "..", ".."))


def checkout_path(*parts):
    """REPO/parts..., e.g. checkout_path("configs", "ShapesOVD", "rpn_R_18_FPN.yaml")."""
    return os.path.join(REPO, *parts)
