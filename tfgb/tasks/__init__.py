"""Losses as TFRS tasks: each task owns its loss and logs it as its own metric."""
from tfgb.tasks.bpr import BPRLoss, bpr_task
from tfgb.tasks.listwise import ListwiseLoss, listwise_task

__all__ = ["BPRLoss", "ListwiseLoss", "bpr_task", "listwise_task"]
