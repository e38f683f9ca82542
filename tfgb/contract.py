"""The data contract between tfgb's data layer and its models (docs/design.md, "Data contract").

Two things cross that boundary:

1. **The training batch** (:data:`TRAINING_BATCH`): a dict of tensors, one per :class:`Field`, that
   :mod:`tfgb.data.stream` emits and every model's ``compute_loss`` reads. Shapes are written with
   the symbols ``B`` (triples in the batch) and ``T`` (``train.aux_size``). Ids are vocabulary
   indices (``int32``). ``fold`` is present only under ``train.graph_folds`` > 1. The
   ``behavior_*`` fields (:data:`BEHAVIOR_BATCH`, :mod:`tfgb.data.behavior_rows`) are present only
   for models that learn from behaviours: M rows per triple, R behaviours, N negatives each.
2. **Side inputs** (:class:`SideInputs`): tables about users, items and interactions beyond the
   deal groups, built from the training split only. A model declares the side inputs it needs
   (its registry entry's ``needs``); a model that needs one the recipe does not provide stops with
   one sentence naming the recipe key (:meth:`SideInputs.require`). Kinds (:data:`SIDE_INPUTS`):

   * ``interactions``: every (user, item) interaction of the training split with an ordered
     behaviour: for group buying ``launch`` (a failed launch) then ``deal`` (a group that
     reached its size). A row carries the furthest behaviour it reached, so in a cascade
     ``launch -> deal`` a deal is a launch too.
   * ``user_features``: categorical columns per user (integer codes, 0 = unknown).
   * ``item_categories``: a root-to-leaf category path per item (a scenario tree).
   * ``user_relations``: typed user-user edges, one view per relation.

Each kind but ``interactions`` is read from a file or derived from the training split (deal groups
and failed launches): :mod:`tfgb.data.features`, :mod:`tfgb.data.scenarios` (a proxy tree by
clustering the items' training users) and :mod:`tfgb.data.relations` (who met whom in a training
group, who launched the same item).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from tfgb.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Field:
    """One tensor of the training batch: name, dtype and symbolic shape."""

    name: str
    dtype: str  # a numpy / TensorFlow dtype name
    shape: tuple[str | int, ...]  # "B" = triples of the batch, "T" = train.aux_size; "M", "R", "N": behaviour rows
    doc: str

    def concrete_shape(self, aux_size: int, sizes: Mapping[str, int] | None = None) -> list[int | None]:
        """The shape with ``B`` unknown (None), ``T`` = ``aux_size`` and the other symbols from ``sizes``."""
        known = {"T": aux_size, **(sizes or {})}
        return [None if dim == "B" else known[dim] if isinstance(dim, str) else int(dim) for dim in self.shape]


TRAINING_BATCH: tuple[Field, ...] = (
    Field("initiator", "int32", ("B",), "the initiator u of each triple"),
    Field("item", "int32", ("B",), "the item i the initiator launched"),
    Field("participant", "int32", ("B",), "a participant p who joined the group"),
    Field("neg_item", "int32", ("B",), "an item u never interacted with in training (task A's BPR negative)"),
    Field("neg_participant", "int32", ("B",), "a user neither u nor in the group (task B's BPR negative)"),
    Field("aux_items", "int32", ("B", "T"), "T^I: items u never interacted with in training (MGBR Eq. 21)"),
    Field("aux_participants", "int32", ("B", "T"), "T^P: users outside the group (MGBR Eq. 24)"),
)
FOLD = Field("fold", "int32", ("B",), "train.graph_folds > 1: the fold of the batch (one value per batch)")
BEHAVIOR_BATCH: tuple[Field, ...] = (
    Field("behavior_user", "int32", ("B", "M"), "the user of a sampled training interaction"),
    Field("behavior_item", "int32", ("B", "M"), "its item"),
    Field("behavior_stage", "int32", ("B", "M"), "the furthest behaviour it reached (R - 1 = the deal)"),
    Field("behavior_neg", "int32", ("B", "M", "R", "N"), "N negatives of the user for every behaviour r"),
)
FIELDS: dict[str, Field] = {f.name: f for f in (*TRAINING_BATCH, FOLD, *BEHAVIOR_BATCH)}


def batch_fields(folds: bool, behaviors: bool = False) -> tuple[Field, ...]:
    """The fields of a training batch, with ``fold`` when the stream is folded and the behaviour rows
    when it carries them."""
    return (*TRAINING_BATCH, *((FOLD,) if folds else ()), *(BEHAVIOR_BATCH if behaviors else ()))


def check_batch(batch: Mapping[str, object], aux_size: int, folds: bool,
                behavior_sizes: Mapping[str, int] | None = None) -> None:
    """Raise ``ValueError`` naming the field when ``batch`` does not follow the contract.

    Checks names, dtypes and ranks, the aux width ``T`` (and ``M``, ``R``, ``N`` of
    ``behavior_sizes`` when the batch carries behaviour rows) and that every field has the same
    ``B``. Works on numpy arrays and tensors alike (anything with ``.shape`` and ``.dtype``).
    """
    expected = {f.name: f for f in batch_fields(folds, behavior_sizes is not None)}
    if set(batch) != set(expected):
        missing, extra = sorted(set(expected) - set(batch)), sorted(set(batch) - set(expected))
        raise ValueError(f"training batch fields differ from the contract: missing {missing}, unexpected {extra}")
    sizes = set()
    for name, field in expected.items():
        value = batch[name]
        dtype = getattr(value.dtype, "name", str(value.dtype))
        shape = list(value.shape)
        if dtype != field.dtype:
            raise ValueError(f"training batch field '{name}' has dtype {dtype}, the contract says {field.dtype}")
        want = field.concrete_shape(aux_size, behavior_sizes)
        if len(shape) != len(want) or any(w is not None and s != w for s, w in zip(shape, want)):
            raise ValueError(f"training batch field '{name}' has shape {shape}, the contract says {field.shape} "
                             f"with T = {aux_size}" + (f" and {dict(behavior_sizes)}" if behavior_sizes else ""))
        sizes.add(shape[0])
    if len(sizes) > 1:
        raise ValueError(f"training batch fields disagree on B: {sorted(sizes)}")


# -- side inputs ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SideInputKind:
    """A kind of side input: its name, the recipe key that provides it, and what it is."""

    name: str
    recipe_key: str
    description: str


INTERACTIONS = SideInputKind("interactions", "data.failed_launches",
                             "interactions with an ordered behaviour type (failed launches and deals)")
USER_FEATURES = SideInputKind("user_features", "data.user_features", "a table of user features")
ITEM_CATEGORIES = SideInputKind("item_categories", "data.item_categories", "a category path per item")
USER_RELATIONS = SideInputKind("user_relations", "data.user_relations", "typed user-user relations")
SIDE_INPUTS: dict[str, SideInputKind] = {k.name: k for k in (INTERACTIONS, USER_FEATURES, ITEM_CATEGORIES,
                                                               USER_RELATIONS)}


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Training interactions with an ordered behaviour (see the module docstring).

    Attributes:
      user, item: ``int32`` [N] vocabulary indices.
      behavior: ``int8`` [N], an index into ``behaviors`` (the furthest behaviour reached).
      behaviors: behaviour names in cascade order, e.g. ``("launch", "deal")``.
    """

    user: np.ndarray
    item: np.ndarray
    behavior: np.ndarray
    behaviors: tuple[str, ...]

    def __post_init__(self):
        n = len(self.user)
        if len(self.item) != n or len(self.behavior) != n:
            raise ValueError("interactions: user, item and behavior must have the same length")
        if n and (self.behavior.min() < 0 or self.behavior.max() >= len(self.behaviors)):
            raise ValueError(f"interactions: behaviour codes must index {self.behaviors}")

    def counts(self) -> dict[str, int]:
        """Rows per behaviour name."""
        found = np.bincount(self.behavior, minlength=len(self.behaviors))
        return {name: int(c) for name, c in zip(self.behaviors, found)}


@dataclasses.dataclass(frozen=True)
class UserFeatures:
    """Categorical user features: ``columns[name]`` is ``int32`` [U] codes in ``[0, sizes[name])``, 0 = unknown."""

    columns: Mapping[str, np.ndarray]
    sizes: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class ItemCategories:
    """A category tree and the root-to-deepest path of every item (:mod:`tfgb.data.scenarios`).

    Node ids: 0 is reserved (unknown / out of vocabulary), 1 is the implicit root (name ``""``) that
    starts every path, 2.. the categories. A node's name is its full path prefix (``"baby"``,
    ``"baby/feeding"``), so equal names at different places of the tree stay distinct nodes.

    Attributes:
      nodes: ``int32`` [I, H], one row per item of the item vocabulary: its path from the root,
        H = 1 + the deepest depth. A path shorter than H repeats its deepest node to the end; an
        item without a path is ``[1, 1, ..., 1]`` (the root only). ``nodes[:, -1]`` is each item's leaf.
      names: [N] the name of every node id.
      parent: ``int32`` [N] the parent of every node id (0 for the root and for id 0).
    """

    nodes: np.ndarray
    names: tuple[str, ...]
    parent: np.ndarray

    def __post_init__(self):
        if self.nodes.ndim != 2 or self.nodes.shape[1] < 1:
            raise ValueError(f"item categories: nodes must be [items, H >= 1], got shape {self.nodes.shape}")
        if len(self.parent) != len(self.names) or len(self.names) < 2:
            raise ValueError("item categories: names and parent need one entry per node id, ids 0 and 1 included")
        if self.nodes.size and (self.nodes.min() < 1 or self.nodes.max() >= len(self.names)):
            raise ValueError(f"item categories: node ids of the paths must be in [1, {len(self.names)})")

    @property
    def num_nodes(self) -> int:
        """N: node ids, the reserved 0 and the root included."""
        return len(self.names)

    @property
    def height(self) -> int:
        """H: path length, 1 + the deepest depth."""
        return int(self.nodes.shape[1])


@dataclasses.dataclass(frozen=True)
class UserRelations:
    """Typed user-user edges, one view per relation name (:mod:`tfgb.data.relations`).

    Attributes:
      src, dst: ``int32`` [E] user vocabulary indices.
      relation: ``int8`` [E] index into ``names``, the view of each edge.
      names: the view names.
      weight: ``float32`` [E] the training evidence behind each edge (deal groups, shared items or file
        rows), or None when unweighted.
    """

    src: np.ndarray
    dst: np.ndarray
    relation: np.ndarray
    names: tuple[str, ...]
    weight: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.src)
        if len(self.dst) != n or len(self.relation) != n or (self.weight is not None and len(self.weight) != n):
            raise ValueError("user relations: src, dst, relation and weight must have the same length")
        if n and (self.relation.min() < 0 or self.relation.max() >= len(self.names)):
            raise ValueError(f"user relations: relation codes must index {self.names}")

    def counts(self) -> dict[str, int]:
        """Edges per view name."""
        found = np.bincount(self.relation, minlength=len(self.names))
        return {name: int(c) for name, c in zip(self.names, found)}


@dataclasses.dataclass(frozen=True)
class SideInputs:
    """The side inputs a recipe provides (None = not provided)."""

    interactions: Interactions | None = None
    user_features: UserFeatures | None = None
    item_categories: ItemCategories | None = None
    user_relations: UserRelations | None = None

    def provided(self) -> list[str]:
        return [name for name in SIDE_INPUTS if getattr(self, name) is not None]

    def require(self, kinds: Iterable[SideInputKind], model: str) -> None:
        """Raise a one-sentence :class:`ConfigError` naming the recipe key of the first missing kind."""
        for kind in kinds:
            if getattr(self, kind.name) is None:
                raise ConfigError(f"model '{model}' needs {kind.description}: set '{kind.recipe_key}' in the recipe")
