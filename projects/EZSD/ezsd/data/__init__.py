from . import datasets  # noqa: F401  (registers the builtin open-vocabulary datasets)
