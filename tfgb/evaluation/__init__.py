"""Evaluation: the protocol (:mod:`tfgb.evaluation.protocol`) and the ranking metrics
(:mod:`tfgb.evaluation.metrics`), one definition for every model (docs/design.md, "Evaluation protocol")."""
from tfgb.evaluation.protocol import Scorer, evaluate, objective, subsample

__all__ = ["Scorer", "evaluate", "objective", "subsample"]
