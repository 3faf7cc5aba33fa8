"""The one way a recorded setting and the one asked for now are compared and reported.

Resumable states, stage records and checkpoints record the settings they were made with; a
mismatch names every differing key with both sides, the same way everywhere.
"""

__all__ = ["settings_difference"]


def settings_difference(recorded, asked, keys=None):
    """None when the two dicts agree on `keys` (default: every key of either); else, per differing
    key in sorted order, "KEY: <recorded> there, <asked> asked", joined by "; " (a key missing on
    one side shows None there)."""
    keys = sorted(set(recorded) | set(asked)) if keys is None else sorted(keys)
    diff = [
        f"{k}: {recorded.get(k)!r} there, {asked.get(k)!r} asked"
        for k in keys
        if recorded.get(k) != asked.get(k)
    ]
    return "; ".join(diff) or None
