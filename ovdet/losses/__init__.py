"""Training losses: Hungarian matching and the set criterion (DETR / OWL-ViT)."""

from ovdet.losses.criterion import SetCriterion
from ovdet.losses.matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "SetCriterion"]
