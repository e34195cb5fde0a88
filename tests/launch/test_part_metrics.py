"""Part-segmentation scores on a case worked out by hand: per-shape IoU over the category's parts (a part
absent from both prediction and truth scores 1), instance / class mIoU, the category-restricted argmax,
and padding that never counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from launch.evaluation.part_data import PartSet
from launch.evaluation.part_metrics import part_scores, restrict_to_category, score_part_set, shape_ious

CLASSES = ("mug", "cap")
CATEGORY_PARTS = ((0, 1), (2, 3, 4))  # mug: parts 0, 1; cap: parts 2, 3, 4
PART_NAMES = ("mug/body", "mug/handle", "cap/peak", "cap/panel", "cap/button")
LABELS = np.array([0, 1, 1])
NUM_POINTS = np.array([5, 4, 6])
# Padding (beyond num_points) holds -1 in truth and part ids in pred that would change every score if counted.
TRUTH = np.array([[0, 0, 0, 1, 1, -1],
                  [2, 2, 3, 3, -1, -1],
                  [2, 2, 2, 3, 3, 3]])
PRED = np.array([[0, 0, 1, 1, 0, 1],
                 [2, 3, 3, 3, 4, 4],
                 [2, 2, 4, 3, 3, 3]])
# Shape 0 (mug): part 0: pred {0,1,4}, truth {0,1,2}: 2/4 = 1/2; part 1: pred {2,3}, truth {3,4}: 1/3.
#   IoU (1/2 + 1/3) / 2 = 5/12.
# Shape 1 (cap): part 2: pred {0}, truth {0,1}: 1/2; part 3: pred {1,2,3}, truth {2,3}: 2/3;
#   part 4 absent from truth and prediction: 1.  IoU (1/2 + 2/3 + 1) / 3 = 13/18.
# Shape 2 (cap): part 2: pred {0,1}, truth {0,1,2}: 2/3; part 3: 1; part 4 predicted at point 2 but absent
#   from truth: 0/1 = 0.  IoU (2/3 + 1 + 0) / 3 = 5/9.
SHAPE_IOUS = [5 / 12, 13 / 18, 5 / 9]
INSTANCE = (5 / 12 + 13 / 18 + 5 / 9) / 3  # 61/108
CATEGORY = {"mug": 5 / 12, "cap": (13 / 18 + 5 / 9) / 2}  # cap: 23/36
CLASS = (5 / 12 + 23 / 36) / 2  # 19/36
ACCURACY = (3 + 3 + 5) / 15  # right points 0,1,3 | 0,2,3 | 0,1,3,4,5 of 5 + 4 + 6 valid points


def test_shape_ious_match_the_hand_values():
    np.testing.assert_allclose(shape_ious(PRED, TRUTH, NUM_POINTS, LABELS, CATEGORY_PARTS), SHAPE_IOUS)


def test_instance_class_and_category_scores_match_the_hand_values():
    scores = part_scores(PRED, TRUTH, NUM_POINTS, LABELS, CATEGORY_PARTS, CLASSES)
    assert scores.instance_miou == pytest.approx(61 / 108) == pytest.approx(INSTANCE)
    assert scores.class_miou == pytest.approx(19 / 36) == pytest.approx(CLASS)
    assert scores.category_iou.keys() == CATEGORY.keys()
    for name, value in CATEGORY.items():
        assert scores.category_iou[name] == pytest.approx(value)
    assert scores.point_accuracy == pytest.approx(ACCURACY)


def test_class_miou_averages_only_the_categories_present():
    caps = part_scores(PRED[1:], TRUTH[1:], NUM_POINTS[1:], LABELS[1:], CATEGORY_PARTS, CLASSES)
    assert caps.category_iou.keys() == {"cap"}
    assert caps.class_miou == pytest.approx(23 / 36) == pytest.approx(caps.instance_miou)


def test_padding_never_counts():
    truth, pred = TRUTH.copy(), PRED.copy()
    truth[0, 5], truth[1, 4:] = 1, 4  # padding that looks like parts of the shape's category
    pred[0, 5], pred[1, 4:] = 0, 2
    np.testing.assert_allclose(shape_ious(pred, truth, NUM_POINTS, LABELS, CATEGORY_PARTS), SHAPE_IOUS)
    assert part_scores(pred, truth, NUM_POINTS, LABELS, CATEGORY_PARTS, CLASSES).point_accuracy == pytest.approx(
        ACCURACY)
    # the same shapes unpadded, one at a time, score the same
    for i, n in enumerate(NUM_POINTS):
        one = shape_ious(PRED[i:i + 1, :n], TRUTH[i:i + 1, :n], np.array([n]), LABELS[i:i + 1], CATEGORY_PARTS)
        assert one[0] == pytest.approx(SHAPE_IOUS[i])


def logits_favouring_the_other_category(rng: np.random.Generator) -> np.ndarray:
    """(3, 6, 5) logits whose argmax over a shape's own parts is PRED, and whose overall maximum is always a
    part of the other category."""
    logits = rng.normal(size=(3, 6, 5))
    for s, c in enumerate(LABELS):
        own, other = list(CATEGORY_PARTS[c]), list(CATEGORY_PARTS[1 - c])
        logits[s][:, own] = rng.uniform(-3, -1, (6, len(own)))
        logits[s, np.arange(6), PRED[s]] = 0.0  # the best of its own parts
        logits[s][:, other] = rng.uniform(5, 9, (6, len(other)))  # higher than any of its own
    return logits


def test_restricted_argmax_never_leaves_the_shape_category():
    logits = logits_favouring_the_other_category(np.random.default_rng(0))
    assert all(logits[s].argmax(-1)[0] not in CATEGORY_PARTS[c] for s, c in enumerate(LABELS))  # unrestricted: wrong
    pred = restrict_to_category(logits, LABELS, CATEGORY_PARTS)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, PRED)
    as_torch = restrict_to_category(torch.tensor(logits, dtype=torch.float32), torch.tensor(LABELS), CATEGORY_PARTS)
    assert as_torch.dtype == torch.int64
    np.testing.assert_array_equal(as_torch.numpy(), PRED)
    scores = part_scores(pred, TRUTH, NUM_POINTS, LABELS, CATEGORY_PARTS, CLASSES)
    assert scores.instance_miou == pytest.approx(INSTANCE) and scores.class_miou == pytest.approx(CLASS)


def test_restricted_argmax_on_random_logits_stays_in_each_category():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 50)
    pred = restrict_to_category(rng.normal(size=(50, 30, 5)), labels, CATEGORY_PARTS)
    for s, c in enumerate(labels):
        assert set(pred[s].tolist()) <= set(CATEGORY_PARTS[c])


def test_score_part_set_scores_a_part_set():
    data = PartSet("toy", np.zeros((3, 6, 3), np.float32), NUM_POINTS, TRUTH, LABELS, CLASSES, PART_NAMES,
                   CATEGORY_PARTS)
    scores = score_part_set(data, PRED)
    assert scores.instance_miou == pytest.approx(INSTANCE) and scores.category_iou["cap"] == pytest.approx(23 / 36)


def test_matches_a_per_shape_loop_on_random_predictions():
    rng = np.random.default_rng(2)
    s, n = 40, 25
    labels = rng.integers(0, 2, s)
    num_points = rng.integers(1, n + 1, s)
    truth = np.full((s, n), -1)
    pred = rng.integers(0, 5, (s, n))  # unrestricted: wrong categories only cost the parts they miss
    for i in range(s):
        truth[i, : num_points[i]] = rng.choice(CATEGORY_PARTS[labels[i]], num_points[i])
    expected = []
    for i in range(s):
        t, p = truth[i, : num_points[i]], pred[i, : num_points[i]]
        ious = []
        for part in CATEGORY_PARTS[labels[i]]:
            union = np.sum((t == part) | (p == part))
            ious.append(1.0 if union == 0 else np.sum((t == part) & (p == part)) / union)
        expected.append(np.mean(ious))
    np.testing.assert_allclose(shape_ious(pred, truth, num_points, labels, CATEGORY_PARTS), expected)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same"):
        shape_ious(PRED[:, :5], TRUTH, NUM_POINTS, LABELS, CATEGORY_PARTS)
    bad = PRED.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="pred holds part ids outside 0..4"):
        shape_ious(bad, TRUTH, NUM_POINTS, LABELS, CATEGORY_PARTS)
    with pytest.raises(ValueError, match="no shapes"):
        part_scores(PRED[:0], TRUTH[:0], NUM_POINTS[:0], LABELS[:0], CATEGORY_PARTS, CLASSES)
