"""tfgb models, chosen by name through :mod:`tfgb.models.registry` and built from a
:class:`~tfgb.models.context.ModelContext`."""
from tfgb.models.registry import build, entry, names, resolve, settings

__all__ = ["build", "build_for", "entry", "names", "resolve", "settings"]


def build_for(config, data, user_features=None):
    """The recipe's model built from prepared data (:class:`tfgb.data.prepare.Prepared`) and, for a model
    that reads them, its user features (:class:`tfgb.contract.UserFeatures`)."""
    from tfgb.models.context import ModelContext

    return build(config, ModelContext.from_prepared(data, config, user_features))  # build resolves the variant
