"""tfgb: group-buying recommendation with TensorFlow.

Task A ranks items for an initiator, s(i|u); task B ranks participants for a launched
(initiator, item), s(p|u,i). See README.md.
"""
import os as _os

# tensorflow-recommenders 0.7.7 needs Keras 2 (tf-keras); this must happen before TensorFlow loads.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TFGB_DETERMINISTIC=1: bit-identical reruns and resumes even on a busy machine. oneDNN's CPU kernels
# pick their work split at run time, so under load two runs differ by ~1e-6 per step (measured); this
# turns them off, which costs about 2x in speed on 2 cores (dense matmul 51 vs 106 GFLOP/s measured).
if _os.environ.get("TFGB_DETERMINISTIC") == "1":
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# A pooling memory allocator (TFGB_ALLOCATOR, see tfgb/allocator.py), chosen before TensorFlow loads; a
# tfgb command asked for jemalloc re-executes itself here with it preloaded.
from tfgb import allocator as _allocator

_allocator.configure()

__version__ = "0.1.0"
