"""tfgb: group-buying recommendation with TensorFlow.

Task A ranks items for an initiator, s(i|u); task B ranks participants for a launched
(initiator, item), s(p|u,i). See README.md and DESIGN.md.
"""
import os as _os

# tensorflow-recommenders 0.7.7 needs Keras 2 (tf-keras); this must happen before TensorFlow loads.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
