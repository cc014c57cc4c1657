"""DETR (detection transformer): model, matcher, set criterion, post-processing."""

from vitlab.models.detr.criterion import SetCriterion
from vitlab.models.detr.detr import DETR, PRESETS, DetrConfig, build_detr, create_detr, list_detr_models
from vitlab.models.detr.matcher import HungarianMatcher
from vitlab.models.detr.postprocess import postprocess
from vitlab.registry import register_arch

register_arch("detr", DETR)  # checkpoints store a DETR as arch "detr" (models/factory.py rebuilds it)

__all__ = ["DETR", "PRESETS", "DetrConfig", "HungarianMatcher", "SetCriterion", "build_detr", "create_detr",
           "list_detr_models", "postprocess"]
