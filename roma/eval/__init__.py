"""Downstream evaluation of pretrained encoders: scene-classification linear probe (AID, UCM).

`from roma.eval import run_probe` works; the import is lazy so that `python -m
roma.eval.classification` does not import its own module twice.
"""

__all__ = ["metric_name", "run_probe"]


def __getattr__(name):
    if name in __all__:
        from roma.eval import classification

        return getattr(classification, name)
    raise AttributeError(f"module 'roma.eval' has no attribute {name!r}")
