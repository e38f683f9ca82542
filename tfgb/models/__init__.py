"""tfgb models: MGBR and its variants, chosen by name through :mod:`tfgb.models.registry`."""
from tfgb.models.registry import build, names, resolve

__all__ = ["build", "names", "resolve"]
