"""``python -m tfgb.data``: write synthetic data, or describe a data set.

Commands:
  ``synth --out DIR [--users N --items M --groups G --seed S --failed F]``
      write the synthetic generator's groups in the Beibei layout (``DIR/groups.txt`` and
      ``DIR/failed.txt``).
  ``stats DIR`` / ``stats --pipeline RECIPE [--data-dir DIR]`` [``--json``]
      read ``DIR/groups.txt`` (+ ``DIR/failed.txt``), or the data a recipe names, and print its
      size, group sizes, degree percentiles, failed launches and train/valid/test split sizes
      (from ``tfgb.data.prepare``, which also caches the split under ``data.cache_dir``).

User errors (missing or bad files, bad recipes) exit with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from tfgb import config as config_lib
from tfgb.data import synth
from tfgb.data.groups import RawGroups
from tfgb.data.readers import read_groups
from tfgb.data.vocab import encode
from tfgb.errors import TfgbError, cli_boundary, setup_logging

PERCENTILES = (50, 90, 99)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfgb.data", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what reading and cleaning do")
    commands = parser.add_subparsers(dest="command", required=True)

    make = commands.add_parser("synth", help="write synthetic deal groups in the Beibei layout")
    make.add_argument("--out", required=True, help="output directory (created if needed)")
    defaults = config_lib.SynthConfig()
    make.add_argument("--users", type=int, default=defaults.users)
    make.add_argument("--items", type=int, default=defaults.items)
    make.add_argument("--groups", type=int, default=defaults.groups)
    make.add_argument("--seed", type=int, default=defaults.seed)
    make.add_argument("--failed", type=float, default=0.3, help="failed launches per deal group (default 0.3)")

    stats = commands.add_parser("stats", help="describe a data set")
    stats.add_argument("dir", nargs="?", help="a directory with groups.txt (and failed.txt), e.g. synth output")
    stats.add_argument("--pipeline", help="a recipe (TOML) whose [data] section names the files")
    stats.add_argument("--data-dir", default=".", help="directory the recipe's files are relative to")
    stats.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


@cli_boundary
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verbose:
        setup_logging(verbose=False)
    if args.command == "synth":
        raw = synth.generate(users=args.users, items=args.items, groups=args.groups, seed=args.seed,
                             failed=args.failed)
        for path in synth.write_beibei(raw, args.out):
            print(path)
        return 0
    if (args.dir is None) == (args.pipeline is None):
        parser.error("stats needs either a directory or --pipeline RECIPE (not both)")
    config, data_dir = _stats_config(args)
    if config.data.source == "synthetic":
        raw = synth.generate(**dataclasses.asdict(config.data.synth))
    else:
        raw = read_groups(config.data, data_dir)
    report = describe(raw)
    try:
        sizes = _split_sizes(config, data_dir)
    except TfgbError as exc:  # the data are fine; the recipe's split / candidate lists are not
        report["split_error"] = str(exc)
    else:
        if sizes is not None:
            report["split"] = sizes
    report["source"] = _source(config, data_dir)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _stats_config(args: argparse.Namespace) -> tuple[config_lib.Config, str]:
    """The recipe to describe: the one given, or one reading ``DIR/groups.txt`` (+ ``failed.txt``)."""
    if args.pipeline is not None:
        return config_lib.load(args.pipeline, args.set), args.data_dir
    failed = "failed.txt" if os.path.exists(os.path.join(args.dir, "failed.txt")) else ""
    config = config_lib.load(None, args.set)
    config.data = dataclasses.replace(config.data, source="files", files=["groups.txt"], failed_launches=failed,
                                      format="beibei")
    return config, args.dir


def _source(config: config_lib.Config, data_dir: str) -> str:
    if config.data.source == "synthetic":
        s = config.data.synth
        return f"synthetic (users={s.users}, items={s.items}, groups={s.groups}, seed={s.seed})"
    names = [*config.data.files, *([config.data.failed_launches] if config.data.failed_launches else [])]
    return f"{data_dir}: {', '.join(names)}"


def _split_sizes(config: config_lib.Config, data_dir: str) -> dict[str, int] | None:
    """Train/valid/test sizes from ``tfgb.data.prepare`` when that module is available."""
    try:
        from tfgb.data.prepare import prepare_split_sizes
    except ImportError:
        return None
    sizes = prepare_split_sizes(config, data_dir)
    if isinstance(sizes, Mapping):
        return {str(k): int(v) for k, v in sizes.items()}
    if isinstance(sizes, Sequence) and len(sizes) == 3:
        return dict(zip(("train", "valid", "test"), map(int, sizes), strict=True))
    return {name: int(getattr(sizes, name)) for name in ("train", "valid", "test")}


def describe(raw: RawGroups) -> dict:
    """Size, group sizes and degree percentiles of raw deal groups (after :func:`encode` cleans them).

    Returns:
      A JSON-ready dict: ``groups``, ``users``, ``items``, ``participants_per_group``, ``degrees``
      (``initiator``/``item``/``participant`` -> p50/p90/p99/max groups per id) and ``failed_launches``.
    """
    groups, users, items, failed_user, _failed_item, _behavior = encode(raw)
    sizes = groups.sizes
    in_groups_users = np.unique(np.concatenate([groups.initiator, groups.participants]))
    return {
        "groups": {"read": len(raw), "kept": len(groups)},
        "participants": {"read": len(raw.participants), "kept": len(groups.participants)},
        "users": {"in_groups": len(in_groups_users), "with_failed_launches": len(users)},
        "items": {"in_groups": len(np.unique(groups.item)), "with_failed_launches": len(items)},
        "participants_per_group": {
            "mean": round(float(sizes.mean()), 4) if len(groups) else 0.0,
            "min": int(sizes.min()) if len(groups) else 0,
            "max": int(sizes.max()) if len(groups) else 0,
        },
        "degrees": {
            "initiator": _percentiles(groups.initiator),
            "item": _percentiles(groups.item),
            "participant": _percentiles(groups.participants),
        },
        "failed_launches": {"read": len(raw.failed_initiator), "kept": len(failed_user)},
    }


def _percentiles(index: np.ndarray) -> dict[str, int]:
    """p50/p90/p99/max of how many rows each distinct value of ``index`` has."""
    counts = np.unique(index, return_counts=True)[1] if len(index) else np.zeros(1, dtype=np.int64)
    out = {f"p{q}": int(np.percentile(counts, q, method="higher")) for q in PERCENTILES}
    out["max"] = int(counts.max())
    return out


def format_report(report: dict) -> str:
    """The stats report as an aligned text table."""
    g, p, u, i = report["groups"], report["participants"], report["users"], report["items"]
    f, per = report["failed_launches"], report["participants_per_group"]
    lines = [
        f"source                  {report['source']}",
        f"deal groups             {g['kept']:,}" + _dropped(g, "groups", p),
        (f"users                   {u['in_groups']:,} in deal groups, "
         f"{u['with_failed_launches']:,} with failed-launch initiators"),
        (f"items                   {i['in_groups']:,} in deal groups, "
         f"{i['with_failed_launches']:,} with failed-launch items"),
        f"participants per group  mean {per['mean']:.3f}, min {per['min']}, max {per['max']}",
        "groups per id           " + "".join(f"{k:>8}" for k in report["degrees"]["initiator"]),
    ]
    for role, values in report["degrees"].items():
        lines.append(f"  {role:<22}" + "".join(f"{v:>8,}" for v in values.values()))
    lines.append(f"failed launches         {f['kept']:,}"
                 + (f" ({f['read'] - f['kept']:,} duplicates dropped)" if f["read"] != f["kept"] else ""))
    if "split" in report:
        lines.append("split                   " + ", ".join(f"{k} {v:,}" for k, v in report["split"].items()))
    if "split_error" in report:
        lines.append(f"split                   not available: {report['split_error']}")
    return "\n".join(lines)


def _dropped(groups: dict, noun: str, participants: dict) -> str:
    if groups["read"] == groups["kept"] and participants["read"] == participants["kept"]:
        return " (none dropped as duplicates)"
    return (f" ({groups['read']:,} read: {groups['read'] - groups['kept']:,} {noun} and "
            f"{participants['read'] - participants['kept']:,} participants dropped as duplicates or self-joins)")


if __name__ == "__main__":
    sys.exit(main())
