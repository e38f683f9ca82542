"""Losses as TFRS tasks: each task owns its loss and logs it as its own metric."""
from tfgb.tasks.bpr import BPRLoss, bpr_task
from tfgb.tasks.listwise import ListwiseLoss, listwise_task
from tfgb.tasks.pointwise import bce_task

__all__ = ["BPRLoss", "ListwiseLoss", "bce_task", "bpr_task", "listwise_task"]
