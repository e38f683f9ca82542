"""``python -m tfgb.evaluate --model-dir M [--split valid|test] [--protocol sampled|full|all|scenario] [--max-groups N]``.

Restores the best checkpoint of a trained run and evaluates it on a split. ``--protocol``:

* ``sampled`` (the default): the saved candidate lists (both tasks, every list length of ``eval.ks`` with
  the HR cut-offs of ``eval.hr_cutoffs``; key names in :mod:`tfgb.evaluation.metrics`);
* ``full``: beyond the lists: task A's full-catalog ``hr@K`` / ``ndcg@K`` at ``eval.full_ks``
  (:mod:`tfgb.evaluation.full`) on ``eval.full_max_initiators`` initiators (``--max-initiators``; 0 = every
  initiator of the split), under ``full``, and the launch-success AUC (:mod:`tfgb.evaluation.launch`) under
  ``launch_success`` when the split has held-out failed launches;
* ``all``: both, plus ``sparsity``, every task A metric by the initiator's training counts
  (:mod:`tfgb.evaluation.breakdown`); the layout of ``test`` in the final ``metrics.json`` of a run;
* ``scenario``: task B's AUC / GAUC / MRR / HR@5 / HR@10 by scenario frequency, head and tail leaves
  (:mod:`tfgb.evaluation.scenario`), at list length 10 and the longest of ``eval.ks``, for any model: the
  scenario tree is the run's own (a TreeMS run saves it), else another run's (``--categories-from R``,
  e.g. a TreeMS run, so every model is compared on one tree), else ``data.item_categories`` or the tree
  derived from the training split as TreeMS derives it.

Prints the metrics and merges them into the run's ``metrics.json`` under ``evaluate/<split>``.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tfgb.errors import ConfigError, cli_boundary, setup_logging
from tfgb.evaluation.breakdown import PROTOCOLS, split_report
from tfgb.evaluation.metrics import key_order

CHOICES = (*PROTOCOLS, "scenario")


def evaluate_run(model_dir: str, split: str = "test", max_groups: int | None = None,
                 data_dir: str | None = None, progress: bool = True, protocol: str = "sampled",
                 max_initiators: int | None = None, categories_from: str | None = None) -> dict:
    """Evaluate the best checkpoint of the run in ``model_dir`` (the last one when none is best).

    Args:
      protocol: ``sampled``, ``full``, ``all`` or ``scenario`` (module docstring).
      categories_from: under ``scenario``, a run dir whose saved scenario tree is used.
      max_groups: saved lists to evaluate (None: ``eval.max_groups``; 0 = all).
      max_initiators: full-catalog initiators (None: ``eval.full_max_initiators``; 0 = all).

    Raises:
      ConfigError: ``model_dir`` is not a trained run (:meth:`tfgb.session.Session.open`), or a bad
        ``protocol`` / ``max_initiators``.
    """
    if protocol not in CHOICES:
        raise ConfigError(f"--protocol must be one of {', '.join(CHOICES)}, got {protocol!r}")
    if max_initiators is not None and max_initiators < 0:
        raise ConfigError(f"--max-initiators must be >= 0 (0 = every initiator), got {max_initiators}")
    from tfgb.session import Session

    session = Session.open(model_dir, data_dir)
    run, config = session.run, session.config
    initiators = config.eval.full_max_initiators if max_initiators is None else max_initiators
    if protocol == "scenario":
        result = scenario_report(session, split, max_groups, categories_from)
    else:
        result = split_report(session.model, session.data, split, config.eval, config.train.seed, protocol,
                              full_initiators=initiators, max_groups=max_groups, progress=progress)
    metrics = run.read_metrics()
    metrics.setdefault("evaluate", {}).setdefault(split, {}).update(result)
    run.write_metrics(metrics)
    return result


def scenario_report(session, split: str, max_groups: int | None, categories_from: str | None) -> dict:
    """``{"by_scenario": {k: report}, "categories": {...}}`` of the ``scenario`` protocol (module docstring)."""
    from tfgb.data import scenarios
    from tfgb.evaluation.scenario import participant_report

    config, data = session.config, session.data
    if categories_from:
        found = scenarios.load(categories_from)
        if found is None:
            raise ConfigError(f"--categories-from {categories_from}: no saved scenario tree there "
                              "(item_categories.json / .npz: a TreeMS run writes them)")
        if found[0].nodes.shape[0] != data.num_items:
            raise ConfigError(f"--categories-from {categories_from}: its tree covers {found[0].nodes.shape[0]} "
                              f"items, this run's data {data.num_items}: not the same data")
    else:
        found = scenarios.load(session.run.path) or scenarios.for_recipe(config, data, session.run.read_data_dir(), needed=True)
    categories, description = found
    counts = np.bincount(np.asarray(data.train.item), minlength=data.num_items)  # training groups per item
    leaves, leaf_counts = scenarios.leaves(categories), scenarios.leaf_counts(categories, counts)
    candidates = data.test_candidates if split == "test" else data.valid_candidates
    limit = config.eval.max_groups if max_groups is None else max_groups
    out = {"by_scenario": {}, "categories": {"source": categories_from or description.get("source", "run")}}
    for k in sorted({10, max(config.eval.ks)}):
        out["by_scenario"][str(k)] = participant_report(
            session.model, candidates, leaves, leaf_counts, k=k, batch_size=config.eval.batch_size,
            max_groups=limit, seed=config.train.seed)
    return out


def ordered(result: dict) -> dict:
    """``result`` with each task's metrics in the order mrr@10, ndcg@10, hr@1/10, hr@5/10, mrr@100, ...
    (not alphabetical); the other entries as they are."""
    return {name: {key: value[key] for key in sorted(value, key=key_order)} if name in ("a", "b") else value
            for name, value in result.items()}


@cli_boundary
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tfgb.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--protocol", choices=list(CHOICES), default="sampled",
                   help="sampled: the saved lists (default); full: full-catalog task A + launch AUC; "
                        "all: both + the sparsity breakdown; scenario: task B by head / tail scenario")
    p.add_argument("--categories-from", help="scenario protocol: use the scenario tree saved in this run dir")
    p.add_argument("--max-groups", type=int, default=None, help="seeded subsample of lists (0 = all)")
    p.add_argument("--max-initiators", type=int, default=None,
                   help="seeded subsample of initiators for the full catalog (default eval.full_max_initiators; "
                        "0 = all)")
    p.add_argument("--data-dir", help="data directory, when the recipe reads files")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    setup_logging()
    result = evaluate_run(args.model_dir, args.split, args.max_groups, args.data_dir, progress=not args.quiet,
                          protocol=args.protocol, max_initiators=args.max_initiators,
                          categories_from=args.categories_from)
    print(json.dumps(ordered(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
