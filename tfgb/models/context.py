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

from tfgb.contract import SideInputs, UserFeatures

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
    """

    num_users: int
    num_items: int
    graphs: Mapping[str, tf.sparse.SparseTensor]
    fold_graphs: tuple[Mapping[str, tf.sparse.SparseTensor], ...] = ()
    item_counts: np.ndarray | None = None
    participant_counts: np.ndarray | None = None
    side: SideInputs = dataclasses.field(default_factory=SideInputs)
    behaviors: tuple[str, ...] = ("launch", "deal")

    def __post_init__(self):
        if self.item_counts is None:
            object.__setattr__(self, "item_counts", np.zeros(self.num_items, np.int64))
        if self.participant_counts is None:
            object.__setattr__(self, "participant_counts", np.zeros(self.num_users, np.int64))
        if len(self.item_counts) != self.num_items or len(self.participant_counts) != self.num_users:
            raise ValueError("item_counts / participant_counts must have I / U entries")

    @classmethod
    def from_prepared(cls, data: Prepared, config: Config, user_features: UserFeatures | None = None) -> ModelContext:
        """The context of ``data`` for ``config`` (fold graphs when ``train.graph_folds`` > 1), with the
        user features of :func:`tfgb.data.features.for_recipe` when given."""
        from tfgb.models.registry import learns_behaviors

        train = config.train
        folds = tuple(data.fold_graphs(train.graph_folds, train.seed, fold_launches=learns_behaviors(config))) \
            if train.graph_folds > 1 else ()
        return cls(num_users=data.num_users, num_items=data.num_items, graphs=data.graphs(), fold_graphs=folds,
                   item_counts=np.bincount(data.train.item, minlength=data.num_items),
                   participant_counts=np.bincount(data.train.participants, minlength=data.num_users),
                   side=dataclasses.replace(side_inputs(data), user_features=user_features),
                   behaviors=tuple(data.behaviors))


def side_inputs(data: Prepared) -> SideInputs:
    """The side inputs the data layer provides: interactions with their behaviour (training deal
    groups and training failed launches, :meth:`Prepared.behavior_interactions`) when the training
    split has failed launches."""
    if len(data.launches("train")[0]) == 0:
        return SideInputs()
    return SideInputs(interactions=data.behavior_interactions())
