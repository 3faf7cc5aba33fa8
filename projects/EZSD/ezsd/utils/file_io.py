"""Atomic file writes: a killed job never leaves a partial file under the final name."""
import contextlib
import json
import os
import tempfile

__all__ = ["atomic_write", "atomic_write_json"]


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
