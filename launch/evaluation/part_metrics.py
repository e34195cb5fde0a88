"""Part-segmentation scores: per-shape IoU over the shape category's parts, instance and class mean IoU.

The convention is PointNet's ShapeNetPart evaluation, kept by PointNet++, Point-MAE and the official
AsymDSD metric (remcofl/AsymDSD, `asymdsd/metrics/shapenetpart_mean_iou.py`): predictions are restricted to
the shape category's parts, a part absent from both prediction and truth scores IoU 1, a shape's IoU is
the mean over its category's parts, instance mIoU averages shapes and class mIoU averages categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from launch.evaluation.part_data import PartSet, category_mask


def restrict_to_category(logits, labels, category_parts: Sequence[Sequence[int]]):
    """Per-point part predictions: the argmax of `logits` over the shape category's parts only.

    `logits` is (S, N, P) (points, then global parts last), `labels` (S,) the shape categories. Works on
    numpy arrays (returns int64 numpy) and on torch tensors (returns an int64 tensor on the logits' device,
    `labels` may be a tensor or an array). Parts outside the category are never predicted, however large
    their logits; the official metric does the same with a -inf fill.
    """
    num_parts = logits.shape[-1]
    mask = category_mask(category_parts, num_parts)
    if isinstance(logits, np.ndarray):
        allowed = mask[np.asarray(labels, dtype=np.int64)][:, None, :]
        return np.where(allowed, logits, -np.inf).argmax(axis=-1).astype(np.int64)
    import torch

    table = torch.as_tensor(mask, device=logits.device)
    allowed = table[torch.as_tensor(labels, device=logits.device).long()][:, None, :]
    return logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1)


def _valid(num_points: np.ndarray, width: int) -> np.ndarray:
    return np.arange(width) < np.asarray(num_points)[:, None]


def shape_ious(pred: np.ndarray, truth: np.ndarray, num_points: np.ndarray, labels: np.ndarray,
               category_parts: Sequence[Sequence[int]]) -> np.ndarray:
    """(S,) IoU of each shape: the mean, over its category's parts, of |pred ∩ truth| / |pred ∪ truth| on its
    first `num_points` points (padding ignored), a part absent from both counting 1.

    `pred` and `truth` are (S, N) global part ids. Predictions outside the category (pass logits through
    `restrict_to_category` to rule them out) only lower the IoU of the true parts they miss.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    labels = np.asarray(labels, dtype=np.int64)
    s, n = truth.shape
    if pred.shape != truth.shape or np.shape(num_points) != (s,) or labels.shape != (s,):
        raise ValueError(f"pred {pred.shape}, truth {truth.shape}, num_points {np.shape(num_points)} and labels "
                         f"{labels.shape} do not describe the same (S, N) shapes")
    mask = category_mask(category_parts)
    p = mask.shape[1]
    valid = _valid(num_points, n)
    pv, tv = pred[valid].astype(np.int64), truth[valid].astype(np.int64)
    for name, values in (("pred", pv), ("truth", tv)):
        if len(values) and (values.min() < 0 or values.max() >= p):
            raise ValueError(f"{name} holds part ids outside 0..{p - 1} on valid points")
    shape = np.broadcast_to(np.arange(s)[:, None], (s, n))[valid]
    pred_count = np.bincount(shape * p + pv, minlength=s * p).reshape(s, p)
    true_count = np.bincount(shape * p + tv, minlength=s * p).reshape(s, p)
    hit = pv == tv
    inter = np.bincount(shape[hit] * p + tv[hit], minlength=s * p).reshape(s, p)
    union = pred_count + true_count - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    own = mask[labels]
    return (iou * own).sum(axis=1) / own.sum(axis=1)


@dataclass(frozen=True)
class PartScores:
    instance_miou: float  # mean shape IoU
    class_miou: float  # mean, over the categories present, of the category's mean shape IoU
    category_iou: dict[str, float]  # category -> its mean shape IoU (categories present only)
    point_accuracy: float  # share of valid points whose part is right

    def headline(self) -> dict[str, float]:
        """The scores that summarise a run, by their report names."""
        return {"instance_miou": self.instance_miou, "class_miou": self.class_miou,
                "point_accuracy": self.point_accuracy}


def part_scores(pred: np.ndarray, truth: np.ndarray, num_points: np.ndarray, labels: np.ndarray,
                category_parts: Sequence[Sequence[int]], class_names: Sequence[str]) -> PartScores:
    """Instance mIoU, class mIoU, per-category IoU and point accuracy of (S, N) part predictions."""
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        raise ValueError("no shapes to score")
    ious = shape_ious(pred, truth, num_points, labels, category_parts)
    category_iou = {class_names[c]: float(ious[labels == c].mean()) for c in np.unique(labels)}
    valid = _valid(num_points, np.shape(truth)[1])
    correct = (np.asarray(pred) == np.asarray(truth))[valid]
    return PartScores(instance_miou=float(ious.mean()), class_miou=float(np.mean(list(category_iou.values()))),
                      category_iou=category_iou, point_accuracy=float(correct.mean()) if len(correct) else 0.0)


def score_part_set(data: PartSet, pred: np.ndarray) -> PartScores:
    """`part_scores` of (S, N) predictions for the clouds of `data`."""
    return part_scores(pred, data.parts, data.num_points, data.labels, data.category_parts, data.class_names)
