import fcntl
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
    test run for every train_net test. Under pytest-xdist (`make test` runs `-n auto`) the workers
    share one: the first to take the lock builds it in the run's common temporary folder."""
    from train_workspace import build_workspace, workspace_env

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp("shapes_workspace")
        return root, build_workspace(root)
    # a worker's basetemp is RUN/popen-gwN: RUN is this run's own folder, shared by its workers
    root = tmp_path_factory.getbasetemp().parent / "shapes_workspace"
    built = root / "built"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            root.mkdir(exist_ok=True)
            build_workspace(root)
            built.touch()
    return root, workspace_env(root)
