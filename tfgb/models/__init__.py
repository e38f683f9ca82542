"""tfgb models, chosen by name through :mod:`tfgb.models.registry` and built from a
:class:`~tfgb.models.context.ModelContext`."""
from tfgb.models import registry
from tfgb.models.registry import build, entry, names, resolve, settings

__all__ = ["build", "build_for", "entry", "names", "resolve", "settings"]


def build_for(config, data, user_features=None, item_categories=None, user_relations=None, data_dir=None):
    """The recipe's model built from prepared data (:class:`tfgb.data.prepare.Prepared`) and, for a model
    that reads them, its side tables (:mod:`tfgb.contract`: user features, item categories, user relations).

    A table the model needs and the caller did not pass is made here as a session makes it (read from
    ``data_dir`` or derived from the training split), without saving it anywhere.
    """
    from tfgb.contract import ITEM_CATEGORIES, USER_RELATIONS
    from tfgb.models.context import ModelContext

    needs = registry.needs(config)
    if item_categories is None and ITEM_CATEGORIES in needs:
        from tfgb.data import scenarios

        item_categories = scenarios.for_recipe(config, data, data_dir, needed=True)[0]
    if user_relations is None and USER_RELATIONS in needs:
        from tfgb.data import relations

        user_relations = relations.for_recipe(config, data, data_dir)[0]
    context = ModelContext.from_prepared(data, config, user_features, item_categories, user_relations)
    return build(config, context)  # build resolves the variant
