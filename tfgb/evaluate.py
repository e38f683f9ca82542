"""``python -m tfgb.evaluate --model-dir M [--split valid|test] [--max-groups N]``.

Restores the best checkpoint of a trained run and evaluates it on the saved candidate lists of a
split (both tasks, every list length of ``eval.ks`` with the HR cut-offs of ``eval.hr_cutoffs``; key
names in :mod:`tfgb.evaluation.metrics`). Prints the metrics and merges them into the run's ``metrics.json``
under ``evaluate/<split>``.
"""
from __future__ import annotations

import argparse
import json
import sys

from tfgb.errors import cli_boundary, setup_logging
from tfgb.evaluation import evaluate
from tfgb.evaluation.metrics import key_order


def evaluate_run(model_dir: str, split: str = "test", max_groups: int | None = None,
                 data_dir: str | None = None, progress: bool = True) -> dict:
    """Evaluate the best checkpoint of the run in ``model_dir`` (the last one when none is best).

    Raises:
      ConfigError: ``model_dir`` is not a trained run (:meth:`tfgb.session.Session.open`).
    """
    from tfgb.session import Session

    session = Session.open(model_dir, data_dir)
    run, config = session.run, session.config
    lists = session.data.valid_candidates if split == "valid" else session.data.test_candidates
    groups = config.eval.max_groups if max_groups is None else max_groups
    result = evaluate(session.model, lists, ks=config.eval.ks, batch_size=config.eval.batch_size,
                      max_groups=groups, seed=config.train.seed, progress=progress, desc=split,
                      hr_cutoffs=config.eval.cutoffs())
    metrics = run.read_metrics()
    metrics.setdefault("evaluate", {})[split] = result
    run.write_metrics(metrics)
    return result


@cli_boundary
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tfgb.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--max-groups", type=int, default=None, help="seeded subsample of lists (0 = all)")
    p.add_argument("--data-dir", help="data directory, when the recipe reads files")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    setup_logging()
    result = evaluate_run(args.model_dir, args.split, args.max_groups, args.data_dir, progress=not args.quiet)
    # Per task in the order mrr@10, ndcg@10, hr@1/10, hr@5/10, mrr@100, ... (not alphabetical).
    ordered = {name: {key: value[key] for key in sorted(value, key=key_order)} if isinstance(value, dict) else value
               for name, value in result.items()}
    print(json.dumps(ordered, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
