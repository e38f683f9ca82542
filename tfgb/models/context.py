"""What a model is built from: one :class:`ModelContext` (docs/design.md, "Models").

Every registered model is constructed as ``Model(context, settings, train)``: the context carries
everything that comes from the data (vocabulary sizes, the training graphs and, under
``train.graph_folds``, each fold's graphs, training counts, side inputs); ``settings`` is the
model's own recipe section (``[model.<name>]``); ``train`` the recipe's ``[train]`` section. Nothing
is attached to a model after construction.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from tfgb.contract import ItemCategories, SideInputs, UserFeatures, UserRelations

if TYPE_CHECKING:
    import tensorflow as tf

    from tfgb.config import Config
    from tfgb.data.prepare import Prepared


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """The data-derived inputs of a model's constructor.

    Attributes:
      num_users, num_items: vocabulary sizes U and I.
      graphs: the training graphs (:func:`tfgb.data.graphs.build_graphs`: "ui", "pi", "up", "hetero"),
        normalised SparseTensors built from every training group.
      fold_graphs: under ``train.graph_folds`` = k > 1, per fold f the same graphs built without
        fold f's groups; empty otherwise.
      item_counts: ``int64`` [I] training groups launched with each item.
      participant_counts: ``int64`` [U] training groups each user joined as a participant.
      side: the side inputs the recipe provides (:mod:`tfgb.contract`).
      behaviors: the data's behaviour names in cascade order (``data.behaviors``; the last is the deal).
      fold_relations: under ``train.graph_folds`` = k > 1 and with ``side.user_relations``, per fold f the
        relations without fold f's groups and launches (:func:`fold_relations`); empty otherwise.
    """

    num_users: int
    num_items: int
    graphs: Mapping[str, tf.sparse.SparseTensor]
    fold_graphs: tuple[Mapping[str, tf.sparse.SparseTensor], ...] = ()
    item_counts: np.ndarray | None = None
    participant_counts: np.ndarray | None = None
    side: SideInputs = dataclasses.field(default_factory=SideInputs)
    behaviors: tuple[str, ...] = ("launch", "deal")
    fold_relations: tuple[UserRelations, ...] = ()

    def __post_init__(self):
        if self.item_counts is None:
            object.__setattr__(self, "item_counts", np.zeros(self.num_items, np.int64))
        if self.participant_counts is None:
            object.__setattr__(self, "participant_counts", np.zeros(self.num_users, np.int64))
        if len(self.item_counts) != self.num_items or len(self.participant_counts) != self.num_users:
            raise ValueError("item_counts / participant_counts must have I / U entries")

    @classmethod
    def from_prepared(cls, data: Prepared, config: Config, user_features: UserFeatures | None = None,
                      item_categories: ItemCategories | None = None,
                      user_relations: UserRelations | None = None) -> ModelContext:
        """The context of ``data`` for ``config`` (fold graphs when ``train.graph_folds`` > 1), with the
        side tables of the session when given (:func:`tfgb.data.features.for_recipe`,
        :func:`tfgb.data.scenarios.for_recipe`, :func:`tfgb.data.relations.for_recipe`)."""
        from tfgb.models.registry import learns_behaviors

        train = config.train
        folds = tuple(data.fold_graphs(train.graph_folds, train.seed, fold_launches=learns_behaviors(config))) \
            if train.graph_folds > 1 else ()
        fold_rel = fold_relations(data, user_relations, train.graph_folds, train.seed) \
            if user_relations is not None and train.graph_folds > 1 else ()
        return cls(num_users=data.num_users, num_items=data.num_items, graphs=data.graphs(), fold_graphs=folds,
                   item_counts=np.bincount(data.train.item, minlength=data.num_items),
                   participant_counts=np.bincount(data.train.participants, minlength=data.num_users),
                   side=dataclasses.replace(side_inputs(data), user_features=user_features,
                                            item_categories=item_categories, user_relations=user_relations),
                   behaviors=tuple(data.behaviors), fold_relations=fold_rel)


def fold_relations(data: Prepared, relations: UserRelations, folds: int, seed: int) -> tuple[UserRelations, ...]:
    """Per fold f, ``relations`` with its views derived from the training split (:data:`tfgb.data.relations.VIEWS`)
    rebuilt without fold f's groups and launches (:func:`tfgb.data.relations.fold_relations`); the views of a
    relation table are kept whole (they are no training group's edges)."""
    from tfgb.data import relations as relations_lib

    own = [n for n, name in enumerate(relations.names) if name not in relations_lib.VIEWS]
    extra = None
    if own:
        keep = np.isin(relations.relation, own)
        extra = UserRelations(relations.src[keep], relations.dst[keep],
                              np.searchsorted(own, relations.relation[keep]).astype(np.int8),
                              tuple(relations.names[n] for n in own),
                              None if relations.weight is None else relations.weight[keep])
    out = tuple(relations_lib.fold_relations(data, folds, seed, extra))
    for fold in out:
        if fold.names != relations.names:
            raise ValueError(f"fold relations have views {fold.names}, the training relations {relations.names}")
    return out
def side_inputs(data: Prepared) -> SideInputs:
    """The side inputs the data layer provides: interactions with their behaviour (training deal
    groups and training failed launches, :meth:`Prepared.behavior_interactions`) when the training
    split has failed launches."""
    if len(data.launches("train")[0]) == 0:
        return SideInputs()
    return SideInputs(interactions=data.behavior_interactions())
