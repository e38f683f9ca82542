"""Keras layers of tfgb: sparse propagation, multi-view GCN, multi-task experts and gates, heads."""
from tfgb.layers.gcn import GCNView, MultiViewGCN
from tfgb.layers.heads import PredictionHead
from tfgb.layers.mtl import MultiTaskBlock
from tfgb.layers.propagation import sparse_matmul

__all__ = ["GCNView", "MultiTaskBlock", "MultiViewGCN", "PredictionHead", "sparse_matmul"]
