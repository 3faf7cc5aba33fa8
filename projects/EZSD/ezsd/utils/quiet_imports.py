"""Importing pinned third-party modules without their deprecation notices, scoped to that import."""

import contextlib
import warnings

__all__ = ["dependency_notices_hidden"]

# Notices that pinned dependencies print when first imported (clip imports pkg_resources; fvcore,
# imported by detectron2, calls torch.jit.script). They say nothing actionable to our users.
_NOTICES = (
    (UserWarning, "pkg_resources is deprecated"),
    (FutureWarning, r".*torch\.jit\.script.*deprecated"),
)


@contextlib.contextmanager
def dependency_notices_hidden():
    """Hide the notices above while the block runs; the process's warning filters are restored
    afterwards (`warnings.catch_warnings`), so importing ezsd leaves them as they were."""
    with warnings.catch_warnings():
        for category, message in _NOTICES:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
