"""Dense metrics against confusion matrices computed by hand."""
import math

import numpy as np
import pytest
import torch

from roma.eval.dense.metrics import ConfusionMatrix, change_metrics, per_class, seg_metrics


def test_confusion_matrix_counts_and_ignores():
    pred = torch.tensor([[0, 1, 1], [0, 0, 1]])
    target = torch.tensor([[0, 1, 0], [255, 1, 1]])  # one ignored pixel
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    # rows = truth, cols = prediction: t0->p0 1, t0->p1 1, t1->p0 1, t1->p1 2
    assert cm.matrix.tolist() == [[1, 1], [1, 2]]


def test_change_metrics_hand_computed():
    # tp = 30, fp = 10, fn = 20, tn = 940
    m = np.array([[940, 10], [20, 30]])
    out = change_metrics(m)
    assert out["precision"] == pytest.approx(75.0)
    assert out["recall"] == pytest.approx(60.0)
    assert out["f1"] == pytest.approx(100 * 2 * 0.75 * 0.6 / 1.35)  # 66.67
    assert out["iou"] == pytest.approx(50.0)  # 30 / 60
    iou0 = 940 / 970
    assert out["miou"] == pytest.approx(100 * (iou0 + 0.5) / 2)
    assert out["oa"] == pytest.approx(97.0)


def test_seg_metrics_three_classes():
    m = np.array([[5, 1, 0], [2, 6, 2], [0, 0, 4]])
    out = seg_metrics(m)
    ious = [5 / 8, 6 / 11, 4 / 6]
    f1s = [10 / 13, 12 / 17, 8 / 10]
    assert out["miou"] == pytest.approx(100 * np.mean(ious))
    assert out["mf1"] == pytest.approx(100 * np.mean(f1s))
    assert out["oa"] == pytest.approx(100 * 15 / 20)
    assert out["iou_2"] == pytest.approx(100 * 4 / 6)


def test_absent_class_is_nan_and_left_out_of_means():
    m = np.array([[10, 0], [0, 0]])  # no change anywhere, none predicted
    pc = per_class(m)
    assert math.isnan(pc["f1"][1]) and math.isnan(pc["precision"][1])
    assert seg_metrics(m)["miou"] == pytest.approx(100.0)
    # predicted change where there is none: precision 0, F1 0 (defined), recall undefined
    out = change_metrics(np.array([[8, 2], [0, 0]]))
    assert out["precision"] == 0.0 and out["f1"] == 0.0 and math.isnan(out["recall"])


def test_bad_inputs_raise():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
