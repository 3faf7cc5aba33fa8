"""Atomic file writes: a killed job never leaves a partial file under the final name."""

import contextlib
import hashlib
import json
import os
import tempfile

from .errors import UserInputError

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "remove_stale_temps",
    "check_writable_dir",
    "resolve_data_path",
    "file_sha256",
]


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temp file next to `path`; rename it onto `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        fd, tmp_path = tempfile.mkstemp(
            dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path)
        )
    except OSError as e:  # name the folder the user can fix, not our random temp name
        raise type(e)(e.errno, e.strerror, directory) from None
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


def remove_stale_temps(folder, names):
    """Remove the temp files (atomic_write's .tmp-XXXXXXXX-<name>) that a killed run left for the
    files `names` of `folder`; return how many. Only for folders no other live job writes."""
    if not os.path.isdir(folder):
        return 0
    names, removed = set(names), 0
    for entry in os.listdir(folder):
        if entry.startswith(".tmp-") and entry.count("-") >= 2 and entry.split("-", 2)[2] in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))
                removed += 1
    return removed


def check_writable_dir(path, what=""):
    """Create the folder `path` if needed and check that files can be created in it, before any
    slow work and before anything there is touched: UserInputError naming it otherwise. Probes
    with a real file (os.access is fooled by read-only mounts, and root passes any mode bits)."""
    path = os.fspath(path)
    label = f"{what} {path}" if what else path
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserInputError(f"{label}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserInputError(f"{label}: cannot write there ({e.strerror or e})") from None


def resolve_data_path(path):
    """A relative data path is looked up under $DETECTRON2_DATASETS (default "datasets") first,
    then as given; an absolute path is returned as is."""
    if not path or os.path.isabs(path):
        return path
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    rooted = os.path.join(root, path)
    return rooted if os.path.exists(rooted) or not os.path.exists(path) else path


def file_sha256(path, length=12):
    """Short sha256 of a file's bytes, recorded in manifests to pair derived files with it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
