"""EZSD for Detectron2.

`import ezsd` registers the builtin open-vocabulary datasets (their files are read when a dataset
or its metadata is first used) and nothing else. The detector's components (meta-architecture,
ROI heads, box head) are registered by `ezsd.modeling`, which `add_ezsd_config` imports: every
config that builds an EZSD model passes through it. Code that never builds the detector (CLIP and
the offline stages) therefore never loads it.
"""

from .utils.quiet_imports import dependency_notices_hidden

with dependency_notices_hidden():
    # detectron2.modeling is imported here only because its first import prints torch's notice
    # (whoever imports it next, the trainer or an offline stage, then prints nothing).
    import detectron2.modeling  # noqa: F401

    from . import data  # noqa: F401  (registers the builtin datasets)
    from .config import add_ezsd_config, load_ezsd_config

__all__ = ["add_ezsd_config", "load_ezsd_config"]
