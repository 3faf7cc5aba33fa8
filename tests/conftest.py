import os

import pytest
import torch

# The test models are tiny: one thread avoids oversubscribing small machines (CI has 2 cores),
# where several threads per tiny op cost far more than they gain.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shapes_workspace(tmp_path_factory):
    """(root, env): the toy ShapesOVD detector workspace (tests/train_workspace.py), built once per
    session for every train_net test."""
    from train_workspace import build_workspace

    root = tmp_path_factory.mktemp("shapes_workspace")
    return root, build_workspace(root)
