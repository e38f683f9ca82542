"""The built-in synthetic group-buying data: seeded, fast, with planted and learnable structure.

The generative story (all draws from one ``numpy.random.Generator``, so a seed fixes the data):

1. Users and items belong to ``COMMUNITIES`` taste communities; every user and item has a latent
   taste vector = its community's centre + noise.
2. Items have Zipf-like popularity (a random permutation of ranks ``1 .. items``) and, independently
   of it, an appeal ``a_i ~ Normal(0, ITEM_APPEAL)``.
3. Every user has a circle of 10-20 friends, most of them from the same community.
4. Users launch groups at different rates (log-normal activity), so most initiators launch several
   groups. An initiator ``u`` picks item ``i`` with probability
   ``∝ popularity(i) ** POPULARITY_EXPONENT * exp(taste_u · taste_i / TEMPERATURE)``.
5. A launch (u, i) succeeds with probability
   ``sigmoid(SUCCESS_BIAS + SUCCESS_SCALE * z(u, i) + a_i)``, where the friend affinity
   ``z(u, i)`` is the mean over u's friends f of ``taste_f · taste_i``, standardised (mean 0,
   standard deviation 1) over the launch distribution of step 4. Success therefore depends on
   whether u's circle likes the item, and on the item's appeal, not on its popularity.
6. A successful launch becomes a deal group with 1-3 participants (mean about 1.5), drawn without
   replacement from ``u``'s friends weighted by ``exp(taste_p · taste_i / TEMPERATURE)``; each
   participant is, with probability ``OUTSIDER``, replaced by a user from outside the circle (drawn
   by a Zipf-like "joiner" activity). An unsuccessful launch becomes a failed launch (u, i).
7. Only with ``tree`` (:mod:`tfgb.data.synth_tree`): the items sit in a category tree (root, 3 top
   branches, 3 mid nodes each, Zipf-sized leaves), and the item's top branch decides who joins its
   groups: ``circle`` (branch 0) as in step 6, ``taste`` (1) any user weighted by
   ``exp(taste_p · taste_i / TEMPERATURE)``, ``crowd`` (2) any user by joiner activity alone. These draws
   come from a generator of their own (seed + 2), so without ``tree`` the data is what it was before
   the tree existed, bit for bit; :func:`item_categories` is the tree's table.

Launches are drawn until there are ``groups`` distinct deal groups (initiator, item, participant
set; never containing their initiator) and ``round(failed * groups)`` failed launches whose
(initiator, item) pairs are distinct and are no deal group's pair. Ids are decimal strings in
separate spaces for users and items, like Beibei's. :func:`world` rebuilds the latent state of a
seed (``World.branch``: each item's top branch with ``tree``), so the planted mechanism can be checked
against the data.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pandas as pd

from tfgb.data import synth_tree
from tfgb.data.groups import RawGroups
from tfgb.errors import ConfigError

COMMUNITIES = 8
DIMENSION = 16
TASTE_NOISE = 0.6  # std of a user's / item's taste around its community centre (centres have norm 1)
TEMPERATURE = 0.25
POPULARITY_EXPONENT = 0.6
ZIPF = 1.0  # item popularity of rank r is r ** -ZIPF
FRIENDS = (10, 20)  # circle size, inclusive range
IN_COMMUNITY = 0.85  # share of friends from the user's own community
OUTSIDER = 0.15  # chance that a participant comes from outside the initiator's circle
GROUP_SIZE_PROBS = (0.6, 0.3, 0.1)  # 1, 2 or 3 participants: mean 1.5
ACTIVITY_SIGMA = 0.8  # log-normal spread of how often users initiate
SUCCESS_BIAS = 0.0  # logit of a launch's success at average friend affinity and appeal
SUCCESS_SCALE = 1.5  # logit change per standard deviation of friend affinity
ITEM_APPEAL = 1.0  # std of an item's appeal, added to the success logit


def generate(users: int = 2000, items: int = 400, groups: int = 6000, seed: int = 7,
             failed: float = 0.3, tree: bool = False, leaf_items: int = synth_tree.ITEMS_PER_LEAF) -> RawGroups:
    """Generate synthetic deal groups and failed launches with planted structure (module docstring).

    Args:
      users: size of the user id space (ids ``"0" .. str(users - 1)``); at least 4.
      items: size of the item id space; at least 2.
      groups: number of distinct deal groups.
      seed: seed of the ``numpy.random.Generator``; the same arguments always give the same data.
      failed: failed launches, as a fraction of ``groups`` (``round(failed * groups)`` distinct
        (initiator, item) pairs, none of them a deal group's pair).
      tree: plant the category tree of step 7 (who joins a group depends on the item's top branch).
      leaf_items: items per leaf of that tree (:func:`tfgb.data.synth_tree.draw`).

    Returns:
      Raw deal groups and failed launches (behaviour 0, ``launch``) with decimal-string ids, each
      in the order they were drawn.

    Raises:
      ConfigError: a size is too small, or that many distinct groups or failed launches cannot be drawn.
    """
    if users < 4 or items < 2 or groups < 0 or failed < 0:
        raise ConfigError("synthetic data needs users >= 4, items >= 2, groups >= 0 and failed >= 0 "
                          f"(got users={users}, items={items}, groups={groups}, failed={failed})")
    rng = np.random.default_rng(seed)
    state = World.draw(rng, users, items)
    state.tree = synth_tree.draw(items, seed, leaf_items) if tree else None
    n_failed = round(failed * groups)

    initiator = item = failed_u = failed_i = np.zeros(0, dtype=np.int64)
    members = np.zeros((0, len(GROUP_SIZE_PROBS)), dtype=np.int64)
    launched = succeeded = 0
    kept_failed = np.zeros(0, dtype=np.int64)
    for _ in range(40):  # each round tops up what the last one lacked (duplicates are dropped)
        missing_groups, missing_failed = groups - len(initiator), n_failed - len(kept_failed)
        if missing_groups <= 0 and missing_failed <= 0:
            break
        rate = min(max(succeeded / launched, 0.05), 0.95) if launched else 0.5
        batch = int(1.1 * max(max(missing_groups, 0) / rate, max(missing_failed, 0) / (1.0 - rate))) + 16
        u = state.initiators(rng, batch)
        i = state.items_for(rng, u)
        success = rng.random(batch) < state.success_probability(u, i)
        launched, succeeded = launched + batch, succeeded + int(success.sum())
        p = state.participants_for(rng, u[success], i[success])
        initiator, item = np.concatenate([initiator, u[success]]), np.concatenate([item, i[success]])
        members = np.concatenate([members, p])
        keep = ~_duplicated(initiator, item, members) & (members >= 0).any(axis=1)
        initiator, item, members = initiator[keep][:groups], item[keep][:groups], members[keep][:groups]
        failed_u, failed_i = np.concatenate([failed_u, u[~success]]), np.concatenate([failed_i, i[~success]])
        kept_failed = _new_pairs(failed_u * items + failed_i, initiator * items + item)[:n_failed]
    if len(initiator) < groups or len(kept_failed) < n_failed:
        raise ConfigError(f"cannot draw {groups} distinct synthetic groups and {n_failed} distinct failed launches "
                          f"from {users} users and {items} items")

    sizes = (members >= 0).sum(axis=1)
    offsets = np.zeros(groups + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    user_ids = np.arange(users).astype(str).astype(object)
    item_ids = np.arange(items).astype(str).astype(object)
    return RawGroups(
        initiator=user_ids[initiator],
        item=item_ids[item],
        offsets=offsets,
        participants=user_ids[members[members >= 0]],  # row-major: group by group, in draw order
        failed_initiator=user_ids[failed_u[kept_failed]],
        failed_item=item_ids[failed_i[kept_failed]],
        failed_behavior=np.zeros(n_failed, dtype=np.int8),
    )


def world(users: int = 2000, items: int = 400, seed: int = 7, tree: bool = False,
          leaf_items: int = synth_tree.ITEMS_PER_LEAF) -> World:
    """The latent state :func:`generate` draws its data from for these arguments (ids = indices)."""
    state = World.draw(np.random.default_rng(seed), users, items)
    state.tree = synth_tree.draw(items, seed, leaf_items) if tree else None
    return state


def item_categories(users: int = 2000, items: int = 400, seed: int = 7,
                    leaf_items: int = synth_tree.ITEMS_PER_LEAF) -> pd.DataFrame:
    """The planted category tree of :func:`generate` ``(..., tree=True)`` as a table: ``item`` (raw id) and
    ``path`` (``"b1/m2/l17"``; step 7). The tree depends on ``items`` and ``seed`` alone (``users`` is for
    symmetry with :func:`user_features`); with ``tree=False`` the data ignores it (a control)."""
    del users
    tree = synth_tree.draw(items, seed, leaf_items)
    return pd.DataFrame({"item": np.arange(items).astype(str), "path": tree.paths()})


def write_beibei(raw: RawGroups, out_dir: str | os.PathLike) -> list[str]:
    """Write deal groups in the Beibei layout: ``groups.txt`` and, with failed launches, ``failed.txt``.

    Files are written into a temporary directory inside ``out_dir`` and renamed into place, so a
    reader never sees a half-written file. A ``failed.txt`` left by an earlier run is removed when
    ``raw`` has no failed launches.

    Returns:
      The paths written.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    texts = {"groups.txt": _beibei_text(raw)}
    if len(raw.failed_initiator):
        texts["failed.txt"] = "".join(
            (raw.failed_initiator.astype(object) + "\t" + raw.failed_item.astype(object) + "\n").tolist())
    tmp = tempfile.mkdtemp(prefix=".synth-", dir=out_dir)
    try:
        for name, text in texts.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
        paths = []
        for name in texts:
            paths.append(os.path.join(out_dir, name))
            os.replace(os.path.join(tmp, name), paths[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stale = os.path.join(out_dir, "failed.txt")
    if "failed.txt" not in texts and os.path.exists(stale):
        os.remove(stale)
    return paths


def _beibei_text(raw: RawGroups) -> str:
    """``initiator\\titem\\tp1\\tp2...\\n`` for every group, built with one join."""
    sizes = np.diff(raw.offsets)
    fields = sizes + 2
    starts = np.zeros(len(raw), dtype=np.int64)
    np.cumsum(fields[:-1], out=starts[1:])
    tokens = np.empty(int(fields.sum()), dtype=object)
    tokens[starts] = raw.initiator
    tokens[starts + 1] = raw.item
    is_participant = np.ones(len(tokens), dtype=bool)
    is_participant[starts] = is_participant[starts + 1] = False
    tokens[is_participant] = raw.participants
    separators = np.full(len(tokens), "\t", dtype=object)
    separators[starts + fields - 1] = "\n"
    interleaved = np.empty(2 * len(tokens), dtype=object)
    interleaved[0::2], interleaved[1::2] = tokens, separators
    return "".join(interleaved.tolist())


def _duplicated(initiator: np.ndarray, item: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``bool`` [G]: same initiator, item and participant set as an earlier group."""
    key = np.column_stack([initiator, item, np.sort(members, axis=1)])  # -1 padding sorts first
    return pd.DataFrame(key).duplicated(keep="first").to_numpy()


def _new_pairs(key: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of every ``key`` that is not in ``taken``, in order."""
    _, first = np.unique(key, return_index=True)
    first.sort()
    return first[~np.isin(key[first], taken)]


class World:
    """The latent state the data is drawn from: tastes, popularity, appeal, friends and activity.

    ``friend_taste`` [U, D] is the mean taste of every user's friends (zero for a user without any);
    ``affinity_mean`` / ``affinity_std`` standardise ``friend_taste[u] · taste_i`` over the launch
    distribution (step 4), so :meth:`friend_affinity` is the ``z`` of step 5. ``tree`` is the planted
    category tree of step 7 (:class:`tfgb.data.synth_tree.Tree`), None without one.
    """

    tree: synth_tree.Tree | None = None

    def __init__(self, user_taste: np.ndarray, item_taste: np.ndarray, log_popularity: np.ndarray,
                 appeal: np.ndarray, friends: np.ndarray, activity: np.ndarray, joiner: np.ndarray,
                 community: np.ndarray | None = None):
        self.user_taste, self.item_taste, self.community = user_taste, item_taste, community
        self.log_popularity, self.appeal, self.friends = log_popularity, appeal, friends
        self.activity, self.joiner = activity, joiner
        valid = friends >= 0
        summed = (user_taste[np.maximum(friends, 0)] * valid[..., None]).sum(axis=1)
        self.friend_taste = summed / np.maximum(valid.sum(axis=1), 1)[:, None]
        self.affinity_mean, self.affinity_std = self._launch_moments()

    @classmethod
    def draw(cls, rng: np.random.Generator, users: int, items: int) -> World:
        centres = rng.normal(size=(COMMUNITIES, DIMENSION))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        user_community = rng.integers(COMMUNITIES, size=users)
        item_community = rng.integers(COMMUNITIES, size=items)
        noise = TASTE_NOISE / np.sqrt(DIMENSION)
        user_taste = centres[user_community] + noise * rng.normal(size=(users, DIMENSION))
        item_taste = centres[item_community] + noise * rng.normal(size=(items, DIMENSION))
        log_popularity = -ZIPF * np.log(rng.permutation(items) + 1.0)
        friends = _friend_circles(rng, user_community)
        activity = rng.lognormal(0.0, ACTIVITY_SIGMA, size=users)
        joiner = 1.0 / (rng.permutation(users) + 1.0) ** 0.7
        appeal = ITEM_APPEAL * rng.normal(size=items)
        return cls(user_taste, item_taste, log_popularity, appeal, friends, activity / activity.sum(),
                   joiner / joiner.sum(), user_community)

    def friend_affinity(self, initiator: np.ndarray, item: np.ndarray) -> np.ndarray:
        """``z`` [N]: the standardised mean taste of each initiator's friends for its item."""
        raw = np.einsum("nd,nd->n", self.friend_taste[initiator], self.item_taste[item])
        return (raw - self.affinity_mean) / self.affinity_std

    def success_probability(self, initiator: np.ndarray, item: np.ndarray) -> np.ndarray:
        """[N] chance that the launch (initiator, item) becomes a deal group (step 5)."""
        logit = SUCCESS_BIAS + SUCCESS_SCALE * self.friend_affinity(initiator, item) + self.appeal[item]
        return 1.0 / (1.0 + np.exp(-logit))

    def _launch_moments(self) -> tuple[float, float]:
        """Mean and standard deviation of ``friend_taste[u] · taste_i`` over launches (u, i) of step 4."""
        total = squares = 0.0
        for users in self._chunks(len(self.activity)):
            chance = self._launch_weights(users)
            chance /= chance.sum(axis=1, keepdims=True)
            chance *= self.activity[users, None]
            raw = self.friend_taste[users] @ self.item_taste.T
            total += float((chance * raw).sum())
            squares += float((chance * raw * raw).sum())
        return total, float(np.sqrt(max(squares - total * total, 1e-12)))

    def _chunks(self, n: int):
        chunk = max(1, 2_000_000 // len(self.log_popularity))
        for start in range(0, n, chunk):
            yield np.arange(start, min(start + chunk, n))

    def _launch_weights(self, initiator: np.ndarray) -> np.ndarray:
        """[N, I] unnormalised chance of each initiator launching each item (step 4), max 1 per row."""
        weight = POPULARITY_EXPONENT * self.log_popularity + self.user_taste[initiator] @ self.item_taste.T / TEMPERATURE
        weight -= weight.max(axis=1, keepdims=True)
        return np.exp(weight, out=weight)

    @property
    def branch(self) -> np.ndarray | None:
        """``int64`` [I] each item's top branch (step 7: 0 circle, 1 taste, 2 crowd), None without a tree."""
        return None if self.tree is None else self.tree.branch

    def initiators(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(len(self.activity), size=n, p=self.activity).astype(np.int64)

    def items_for(self, rng: np.random.Generator, initiator: np.ndarray) -> np.ndarray:
        """One item per initiator, drawn by inverse CDF over popularity and taste (chunked over rows)."""
        n_items = len(self.log_popularity)
        out = np.empty(len(initiator), dtype=np.int64)
        for rows in self._chunks(len(initiator)):
            weight = np.cumsum(self._launch_weights(initiator[rows]), axis=1)
            threshold = rng.random(len(rows)) * weight[:, -1]
            out[rows] = np.minimum((weight < threshold[:, None]).sum(axis=1), n_items - 1)
        return out

    def participants_for(self, rng: np.random.Generator, initiator: np.ndarray, item: np.ndarray) -> np.ndarray:
        """``int64`` [G, 3] participants per group (-1 pads groups smaller than 3)."""
        n, width = len(initiator), len(GROUP_SIZE_PROBS)
        circle = self.friends[initiator]  # [G, F], -1 padded
        taste = np.einsum("gfd,gd->gf", self.user_taste[np.maximum(circle, 0)], self.item_taste[item])
        logits = np.where(circle >= 0, taste / TEMPERATURE, -np.inf) + rng.gumbel(size=circle.shape)
        top = np.argsort(-logits, axis=1)[:, :width]  # Gumbel top-k = weighted draw without replacement
        chosen = np.take_along_axis(circle, top, axis=1)
        outsider = rng.random((n, width)) < OUTSIDER
        chosen[outsider] = rng.choice(len(self.joiner), size=int(outsider.sum()), p=self.joiner)
        size = rng.choice(np.arange(1, width + 1), size=n, p=GROUP_SIZE_PROBS)
        chosen[np.arange(width)[None, :] >= size[:, None]] = -1
        for _ in range(100):  # redraw outsiders that hit the initiator or repeat a participant
            sorted_rows = np.sort(chosen, axis=1)
            repeat = ((sorted_rows[:, 1:] == sorted_rows[:, :-1]) & (sorted_rows[:, 1:] >= 0)).any(axis=1)
            clash = (chosen == initiator[:, None]) | (repeat[:, None] & outsider & (chosen >= 0))
            if not clash.any():
                break
            chosen[clash] = rng.integers(len(self.joiner), size=int(clash.sum()))
        if self.tree is not None:  # step 7: the groups of the taste and crowd branches join otherwise
            chosen = synth_tree.rejoin(self, self.tree, initiator, item, chosen, size)
        # Any leftover clash (tiny worlds only): drop the slot rather than emit a bad group.
        chosen[chosen == initiator[:, None]] = -1
        return _compact_rows(chosen)


def _compact_rows(chosen: np.ndarray) -> np.ndarray:
    """Remove repeated ids within each row and move the -1 padding to the end, keeping order."""
    order = np.argsort(chosen, axis=1, kind="stable")
    sorted_rows = np.take_along_axis(chosen, order, axis=1)
    repeat = np.zeros_like(chosen, dtype=bool)
    repeat[:, 1:] = sorted_rows[:, 1:] == sorted_rows[:, :-1]
    dropped = np.zeros_like(repeat)
    np.put_along_axis(dropped, order, repeat, axis=1)
    chosen = np.where(dropped, -1, chosen)
    position = np.argsort(chosen < 0, axis=1, kind="stable")  # valid entries first, in order
    return np.take_along_axis(chosen, position, axis=1)


def _friend_circles(rng: np.random.Generator, community: np.ndarray) -> np.ndarray:
    """``int64`` [users, FRIENDS[1]] friends of every user (-1 padded), mostly from its community."""
    users, width = len(community), FRIENDS[1]
    by_community = np.argsort(community, kind="stable")
    start = np.searchsorted(community[by_community], np.arange(COMMUNITIES))
    count = np.bincount(community, minlength=COMMUNITIES)
    own = community[:, None]
    inside = by_community[start[own] + (rng.random((users, width)) * count[own]).astype(np.int64)]
    anyone = rng.integers(users, size=(users, width))
    circle = np.where(rng.random((users, width)) < IN_COMMUNITY, inside, anyone)
    size = rng.integers(FRIENDS[0], FRIENDS[1] + 1, size=users)
    circle[np.arange(width)[None, :] >= size[:, None]] = -1
    circle[circle == np.arange(users)[:, None]] = -1
    return _compact_rows(circle)


FEATURE_NOISE = 0.1  # chance that a user's planted segment is replaced by a random one


def user_features(users: int = 2000, items: int = 400, seed: int = 7) -> pd.DataFrame:
    """A user feature table for :func:`generate`'s data of the same arguments, with planted groups.

    ``segment`` is the user's taste community (step 1), replaced by a random one with probability
    ``FEATURE_NOISE``; ``age`` is a number whose mean depends on the community (8 levels, unit noise), so a
    bucketised ``age`` carries the community too; ``device`` is noise. Users of a community share a
    taste, so the features define groups with group-specific tastes, and most users launch only a few
    groups (step 4's log-normal activity): the case bi-level user modeling is for. The draws come from
    their own generator (seed + 1): the deal groups of :func:`generate` do not change.
    """
    state = world(users, items, seed)
    rng = np.random.default_rng(seed + 1)
    community = state.community
    segment = np.where(rng.random(users) < FEATURE_NOISE, rng.integers(COMMUNITIES, size=users), community)
    age = 20.0 + 5.0 * community + rng.normal(size=users)
    return pd.DataFrame({"user": np.arange(users).astype(str), "segment": [f"s{k}" for k in segment],
                         "age": np.round(age, 2), "device": rng.choice(["ios", "android", "web"], size=users)})

