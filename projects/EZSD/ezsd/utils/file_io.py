"""Atomic file writes: a killed job never leaves a partial file under the final name."""
import contextlib
import json
import os
import tempfile

__all__ = ["atomic_write", "atomic_write_json", "resolve_data_path"]


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temp file next to `path`; rename it onto `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def atomic_write_json(path, obj, indent=None):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)


def resolve_data_path(path):
    """A relative data path is looked up under $DETECTRON2_DATASETS (default "datasets") first,
    then as given; an absolute path is returned as is."""
    if not path or os.path.isabs(path):
        return path
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    rooted = os.path.join(root, path)
    return rooted if os.path.exists(rooted) or not os.path.exists(path) else path
