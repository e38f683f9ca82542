"""The on-disk cache of :func:`tfgb.data.prepare.prepare`: one directory per key, written atomically.

    groups.npz              train/valid/test tables, failed launches with their behaviour and split
    valid_candidates.npz    saved candidate lists of the valid split
    test_candidates.npz     ... of the test split
    users.txt, items.txt    vocabularies (raw id per line, line n = index n)
    manifest.json           key, what it hashes, sizes, timings; written last

A cache is written into a temporary directory inside ``cache_dir`` and renamed into place in one
``os.rename``, so a killed or concurrent run never leaves a partial directory under a key (stray
``.tmp-*`` directories are never read).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tfgb.data.candidates import Candidates
from tfgb.data.groups import DealGroups
from tfgb.data.vocab import Vocabulary

if TYPE_CHECKING:
    from tfgb.config import Config
    from tfgb.data.prepare import Prepared

logger = logging.getLogger(__name__)

# Bump FORMAT_VERSION in the commit that changes what prepare writes for the same inputs and settings:
# the cache layout (files, array names, dtypes, manifest fields read back) or the result of any step (the
# synthetic generator, reading, encoding, the split, candidate sampling, the order of random draws).
# The key holds no source code, so a cache written by older code is trusted until this number changes.
# 2: failed launches carry a behaviour and a split of their own; the synthetic data plants launch success.
FORMAT_VERSION = 2
TABLE_FIELDS = ("initiator", "item", "offsets", "participants")
LAUNCH_FIELDS = ("failed_users", "failed_items", "failed_behavior", "failed_split")


def save_vocabularies(directory: str | os.PathLike, users: Vocabulary, items: Vocabulary) -> None:
    """Write ``users.txt`` and ``items.txt`` into ``directory`` (created when missing)."""
    os.makedirs(directory, exist_ok=True)
    users.save(os.path.join(directory, "users.txt"))
    items.save(os.path.join(directory, "items.txt"))


def valid_cache(path: str, key: str) -> bool:
    try:
        with open(os.path.join(path, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return False
    return manifest.get("key") == key  # the key covers FORMAT_VERSION


def write(prepared: Prepared, cache_dir: str, final: str, key: str, config: Config, replace: bool = False,
          inputs: dict[str, Any] | None = None) -> None:
    """Write the cache into a temporary directory, then rename it to ``final`` in one step.

    An existing ``final`` is kept when it is complete (a concurrent run wrote the same content
    first), unless ``replace`` says it could not be loaded; an incomplete one is replaced. The
    manifest records ``inputs`` (:func:`tfgb.data.prepare.key_inputs`, what ``key`` hashes).
    """
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{key[:24]}-", dir=cache_dir)
    try:
        arrays = {name: getattr(prepared, name) for name in LAUNCH_FIELDS}
        arrays.update(num_users=np.int64(prepared.num_users), num_items=np.int64(prepared.num_items))
        for name in ("train", "valid", "test"):
            table = getattr(prepared, name)
            arrays.update({f"{name}_{field}": getattr(table, field) for field in TABLE_FIELDS})
        with open(os.path.join(tmp, "groups.npz"), "wb") as fh:
            np.savez(fh, **arrays)
        prepared.valid_candidates.save(os.path.join(tmp, "valid_candidates.npz"))
        prepared.test_candidates.save(os.path.join(tmp, "test_candidates.npz"))
        save_vocabularies(tmp, prepared.user_vocab, prepared.item_vocab)
        launches = np.bincount(prepared.failed_split, minlength=3)
        manifest = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "key_inputs": inputs,
            "data": dataclasses.asdict(config.data),
            "sizes": {"train": len(prepared.train), "valid": len(prepared.valid), "test": len(prepared.test),
                      "users": prepared.num_users, "items": prepared.num_items,
                      "failed_launches": int(prepared.failed_users.size),
                      "failed_launches_split": [int(n) for n in launches]},
            "moved_to_train": prepared.moved_to_train,
            "timings": prepared.timings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache is as readable as its parent
        if os.path.isdir(final) and (replace or not valid_cache(final, key)):
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not valid_cache(final, key):
                raise
            logger.info("prepare: another run wrote %s first; keeping it", final)  # identical content
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(path: str, behaviors: tuple[str, ...]) -> Prepared:
    """Read a cache directory written by :func:`write`."""
    from tfgb.data.prepare import Prepared

    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    with np.load(os.path.join(path, "groups.npz")) as arrays:
        num_users, num_items = int(arrays["num_users"]), int(arrays["num_items"])
        tables = [DealGroups(*(arrays[f"{name}_{field}"] for field in TABLE_FIELDS), num_users, num_items)
                  for name in ("train", "valid", "test")]
        launches = {name: arrays[name] for name in LAUNCH_FIELDS}
    return Prepared(
        *tables,
        user_vocab=Vocabulary.load(os.path.join(path, "users.txt")),
        item_vocab=Vocabulary.load(os.path.join(path, "items.txt")),
        **launches,
        behaviors=behaviors,
        valid_candidates=Candidates.load(os.path.join(path, "valid_candidates.npz")),
        test_candidates=Candidates.load(os.path.join(path, "test_candidates.npz")),
        cache_path=path,
        from_cache=True,
        moved_to_train={k: int(v) for k, v in manifest.get("moved_to_train", {}).items()},
    )
