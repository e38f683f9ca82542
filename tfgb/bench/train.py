"""``python -m tfgb.bench train|eval``: where a training step and an evaluation spend their time.

``train`` times, in one run and on the recipe's real first batch: the whole training step, the
graph propagation alone (forward + backward), and therefore the rest (multi-task block, heads,
losses, optimizer); it prints scored rows, triples and deal groups per second, the multi-task
block's FLOPs per step computed from the dimensions, this machine's dense matmul FLOP/s measured
in the same run, the ratio of the two, and the peak resident memory.

``eval`` scores the test candidate lists (both tasks, the longest list of the recipe) from
embeddings propagated once and prints candidates scored per second and the projected time of the
full test evaluation.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import numpy as np


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", help="recipe TOML (default: pipelines/default.toml)")
    parser.add_argument("--data-dir", help="directory the recipe's data files are relative to")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--steps", type=int, default=5, help="timed repetitions of each measurement")


def add_train_only_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--no-readable", dest="readable", action="store_false",
                        help="do not also time the readable multi-task block (it needs far more memory on large "
                             "batches: measured 17.9 GiB against 8.3 GiB on the Beibei |T| = 99 recipe)")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--model-dir", help="a trained run, restored with its own recipe (--pipeline and --set unused; "
                        "default: the recipe with freshly initialised weights)")
    parser.add_argument("--max-groups", type=int, default=2000, help="test lists to score (0 = all)")


def _median_seconds(fn, repeats: int) -> float:
    fn()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def block_flops(rows_a: int, rows_b: int, rows: int, distinct: dict[str, int], width: int, d: int, k: int,
                layers: int, shared: bool, alpha: float, hidden: list[int]) -> float:
    """Forward multiply-add FLOPs (x2) of MGBR's multi-task block and heads on one training batch.

    Layer 1 and the adjusted gates are projected once per distinct initiator / item / participant
    (``distinct``); later layers and the expert mixing run per row (``rows``), except that the
    last layer computes task A's experts, gate and head on the ``rows_a`` rows whose task-A score
    is used and task B's on ``rows_b`` (the shared experts on both; no gate S there). Mixing
    weights every expert group once per gate output (the gates that mix the same group have
    their weights added first). When the heads' first hidden width h is below d and L > 1, the
    block folds that layer into its last layer's experts (h columns per expert, not d).
    """
    g = 2 if shared else 1  # expert groups that the generic gate of A or B mixes
    gate_cols = 2 * g * k + (3 * k if shared and layers > 1 else 0)
    adjusted = 4 * k * layers if alpha else 0  # per part: 2 tasks x 2 pairs containing it, K columns
    total = sum(m * width * ((3 if shared else 2) * k * d + gate_cols + adjusted) * 2 for m in distinct.values())
    head_width = hidden[0] if hidden else 1
    fold = layers > 1 and head_width < d
    in_ab, in_s = (2 * d if shared else d), 3 * d
    for layer in range(1, layers + 1):
        last = layer == layers
        out = head_width if last and fold else d  # columns per expert
        ra, rb = (rows_a, rows_b) if last else (rows, rows)
        if layer > 1:
            total += (ra + rb) * in_ab * (k * out + g * k) * 2  # task experts and generic gates
            total += (ra + rb if last and fold else rows) * in_s * k * out * 2  # shared experts
            total += 0 if last else rows * in_s * 3 * k * 2  # gate S
        total += (ra + rb) * g * k * out * 2 + (0 if last else rows * 3 * k * out * 2)  # mixing
    sizes = [d, *hidden, 1]
    if fold:
        sizes = sizes[1:]  # the first head layer is inside the experts
    total += (rows_a + rows_b) * sum(a * b * 2 for a, b in itertools.pairwise(sizes))
    return float(total)


def _peak_gib() -> float:
    from tfgb.train import peak_memory_gib

    return peak_memory_gib()


def _dense_flops_per_second(repeats: int) -> float:
    import tensorflow as tf

    a = tf.random.normal([8192, 768])
    b = tf.random.normal([768, 768])
    fn = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return 2 * 8192 * 768 * 768 / _median_seconds(lambda: fn().numpy(), repeats)


def _session(args: argparse.Namespace, model_dir: str):
    """The recipe and a fresh :class:`tfgb.session.Session` of it in ``model_dir`` (variables built)."""
    from tfgb.session import Session, configure_determinism
    from tfgb.train import load_config

    config = load_config(args.pipeline, args.set)
    configure_determinism(config.train.deterministic)
    return config, Session.create(config, args.data_dir, model_dir)


def bench_train(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from tfgb.models.mgbr import MGBR

    with tempfile.TemporaryDirectory(prefix="tfgb-bench-") as tmp:
        config, session = _session(args, tmp)
        model = session.model
        batch = next(iter(session.stream().dataset(0)))
        b = int(batch["initiator"].shape[0])
        t = config.train.aux_size if config.train.aux_losses else 0
        step = tf.function(model.train_step)
        step_s = _median_seconds(lambda: step(batch)["loss"].numpy(), args.steps)
        gcn_vars = [v for v in model.trainable_variables if v.name.startswith("gcn")] or model.trainable_variables

        @tf.function
        def propagate():
            with tf.GradientTape() as tape:
                emb = model.propagate(training=True)
                total = tf.add_n([tf.reduce_sum(v * v) for v in emb.values()])
            return tape.gradient(total, gcn_vars)

        prop_s = _median_seconds(lambda: [tf.convert_to_tensor(g).numpy() for g in propagate() if g is not None],
                                 args.steps)  # IndexedSlices for tables read by gather (e.g. MF-BPR)
        dense = _dense_flops_per_second(args.steps)
        peak = _peak_gib()  # of the fused training step, before the readable path's larger activations
        readable_s = None  # the same step with the multi-task block by its readable path: what fusing buys
        if isinstance(model, MGBR) and getattr(args, "readable", True):  # MGBR and MAMGBR
            with model.readable_block():
                readable_step = tf.function(model.train_step)
                readable_s = _median_seconds(lambda: readable_step(batch)["loss"].numpy(), args.steps)
    from tfgb.models import registry

    m = registry.settings(config)
    rows = b * (4 + 2 * t)
    chunk = config.train.block_chunk or b

    def distinct_ids(*keys: str) -> int:  # the block projects each distinct item / participant of a chunk once
        return sum(len(np.unique(np.concatenate([np.ravel(batch[key][start:start + chunk]) for key in keys
                                                 if t or not key.startswith("aux")])))
                   for start in range(0, b, chunk))

    distinct = {"u": b, "i": distinct_ids("item", "neg_item", "aux_items"),
                "p": -(-b // chunk) + distinct_ids("participant", "neg_participant", "aux_participants")}  # + mean
    rows_a, rows_b = b * (2 + 2 * t), b * (2 + t)  # rows whose task-A / task-B score is used
    expert_block = registry.entry(config.model.name).expert_block
    flops = 0.0 if not expert_block else 3 * block_flops(rows_a, rows_b, rows, distinct, 2 * m.embedding_dim, m.embedding_dim, m.num_experts, m.mtl_layers,
                            m.shared_experts, m.alpha, m.mlp_hidden)  # forward + backward ~ 3x forward
    rest_s = max(step_s - prop_s, 1e-9)
    per_group = float(np.mean(session.data.train.sizes))
    lines = [
        ("batch (triples)", f"{b}"), ("aux size |T|", f"{t}"), ("scored rows per step", f"{rows:,}"),
        ("seconds per step", f"{step_s:.3f}"),
        *([("  with the readable block instead", f"{readable_s:.3f}"),
           ("  fused / readable (speed ratio)", f"{readable_s / step_s:.2f}")] if readable_s else []),
        ("  graph propagation (fwd+bwd)", f"{prop_s:.3f}"),
        ("  the rest (block, heads, losses, update)", f"{rest_s:.3f}"),
        ("scored rows per second", f"{rows / step_s:,.0f}"),
        ("triples per second", f"{b / step_s:,.1f}"),
        ("deal groups per second", f"{b / per_group / step_s:,.1f}"),
        ("multi-task block FLOPs per step (fwd+bwd)", f"{flops / 1e9:,.1f} GFLOP"),
        ("block FLOP/s (over the rest of the step)", f"{flops / rest_s / 1e9:,.1f} GFLOP/s"),
        ("dense matmul FLOP/s, same run", f"{dense / 1e9:,.1f} GFLOP/s"),
        ("block / dense matmul", f"{flops / rest_s / dense:.2f}"),
        ("peak resident memory (fused training step)", f"{peak:.2f} GiB"),
        *([("  with the readable block's timing", f"{_peak_gib():.2f} GiB")] if readable_s else []),
    ]
    values = {"seconds per step": step_s, "propagation seconds": prop_s, "rest seconds": rest_s,
              "deal groups per second": b / per_group / step_s, "block GFLOP/s": flops / rest_s / 1e9,
              "dense matmul GFLOP/s": dense / 1e9, "block / dense matmul": flops / rest_s / dense,
              "peak RSS in-process (GiB)": peak}
    if readable_s:
        values.update({"readable block seconds per step": readable_s, "fused / readable speed": readable_s / step_s})
    _print(f"bench train: {config.name} / {config.model.name}", lines, args, values)
    return 0


def bench_eval(args: argparse.Namespace) -> int:
    from tfgb.evaluation import Scorer, subsample
    from tfgb.session import Session

    with tempfile.TemporaryDirectory(prefix="tfgb-bench-") as tmp:
        if args.model_dir:  # a trained run: its own recipe and data, best checkpoint restored
            session = Session.open(args.model_dir, args.data_dir)
            config = session.config
        else:
            config, session = _session(args, tmp)
        lists = session.data.test_candidates
        chosen = lists.take(subsample(lists, args.max_groups, seed=0))
        k = max(k for k in config.eval.ks if k <= lists.negatives + 1)
        start = time.perf_counter()
        scorer = Scorer(session.model, config.eval.batch_size)
        propagate_s = time.perf_counter() - start
        items, _ = chosen.task_a(k)
        users, _ = chosen.task_b(k)
        scorer.items(chosen.initiator[:2], items[:2])  # trace
        scorer.participants(chosen.initiator[:2], chosen.item[:2], users[:2])
        start = time.perf_counter()
        scorer.items(chosen.initiator, items)
        scorer.participants(chosen.initiator, chosen.item, users)
        score_s = time.perf_counter() - start
    scored = 2 * len(chosen) * k
    per_second = scored / score_s
    full = 2 * len(lists) * sum(k for k in config.eval.ks if k <= lists.negatives + 1)
    lines = [
        ("lists scored (both tasks)", f"{2 * len(chosen):,} x {k} candidates"),
        ("propagation, once", f"{propagate_s:.2f} s"),
        ("candidates scored per second", f"{per_second:,.0f}"),
        ("projected full test evaluation",
         f"{full / per_second + propagate_s:,.0f} s ({len(lists):,} groups, lists of {config.eval.ks})"),
        ("peak resident memory", f"{_peak_gib():.2f} GiB"),
    ]
    values = {"propagation seconds": propagate_s, "candidates scored per second": per_second,
              "projected full test evaluation (s)": full / per_second + propagate_s,
              "peak RSS in-process (GiB)": _peak_gib()}
    _print(f"bench eval: {config.name} / {config.model.name}", lines, args, values)
    return 0


def _print(title: str, lines: list[tuple[str, str]], args: argparse.Namespace, values: dict[str, float]) -> None:
    from tfgb.bench.allocators import write_report

    write_report(getattr(args, "report_json", None), title, values)
    print(title)
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"  {name:<{width}}  {value}")
