"""Metrics against hand-computed confusion matrices, and semantic inference on tiny tensors."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from maskmine.eval.metrics import ConfusionMatrix, per_class_csv
from maskmine.eval.semantic import (
    argmax_labels,
    ensemble_probs,
    proposal_class_probs,
    semantic_inference,
    semantic_map,
)
from maskmine.eval.templates import SIMPLE_TEMPLATES, TEMPLATE_SETS, VILD_TEMPLATES

# Four classes; class 2 is predicted but absent from the ground truth, class 3
# appears nowhere; two pixels are ignore (255).
GT = np.array([[0, 0, 0, 1], [1, 255, 255, 1]])
PRED = np.array([[0, 0, 1, 1], [2, 0, 2, 1]])
# Non-ignored (pred, gt) pairs: (0,0) x2, (1,0) x1, (1,1) x2, (2,1) x1.
#   tp       = [2, 2, 0, 0]
#   pos_gt   = [3, 3, 0, 0]
#   pos_pred = [2, 3, 1, 0]   (the ignored pixels predicted 0 and 2 count nowhere)
#   acc      = [2/3, 2/3, nan, nan]
#   union    = [3+2-2, 3+3-2] = [3, 4]  →  iou = [2/3, 1/2, nan, nan]
#   acc_valid = [T, T, F, F];  iou_valid = pos_gt + pos_pred > 0 = [T, T, T, F]
#   mIoU  = (2/3 + 1/2) / 3 = 7/18       (class 2: predicted, never in gt → counts as 0)
#   mACC  = (2/3 + 2/3) / 2 = 2/3
#   fwIoU = 2/3 * 3/6 + 1/2 * 3/6 = 7/12
#   pACC  = (2 + 2) / 6 = 2/3


def test_hand_computed_metrics_with_ignore_and_absent_classes():
    cm = ConfusionMatrix(4, ignore_label=255)
    cm.update(PRED, GT)
    m = cm.compute()
    assert m.tp.tolist() == [2, 2, 0, 0]
    assert m.pos_gt.tolist() == [3, 3, 0, 0]
    assert m.pos_pred.tolist() == [2, 3, 1, 0]
    assert m.miou == pytest.approx(100 * 7 / 18)
    assert m.macc == pytest.approx(100 * 2 / 3)
    assert m.fwiou == pytest.approx(100 * 7 / 12)
    assert m.pacc == pytest.approx(100 * 2 / 3)
    assert m.iou[:2] == pytest.approx([100 * 2 / 3, 50.0])
    assert m.acc[:2] == pytest.approx([100 * 2 / 3, 100 * 2 / 3])
    assert math.isnan(m.iou[2]) and math.isnan(m.iou[3])
    assert math.isnan(m.acc[2]) and math.isnan(m.acc[3])
    assert m.summary() == pytest.approx(
        {"mIoU": 100 * 7 / 18, "fwIoU": 100 * 7 / 12, "mACC": 100 * 2 / 3, "pACC": 100 * 2 / 3}
    )


def test_as_dict_uses_detectron2_keys_and_none_for_nan():
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    d = cm.compute().as_dict(["a", "b", "c", "d"])
    assert d["IoU-b"] == pytest.approx(50.0)
    assert d["IoU-c"] is None and d["ACC-d"] is None
    json.dumps(d)  # serialisable as is


def _detectron2_reference(pred: np.ndarray, gt: np.ndarray, n: int, ignore: int) -> dict:
    """detectron2 v0.6 / OVSeg SemSegEvaluator.evaluate, restated over its (n+1)^2 matrix."""
    gt = gt.astype(np.int64).copy()
    gt[gt == ignore] = n
    conf = np.bincount((n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(n + 1) ** 2)
    conf = conf.reshape(n + 1, n + 1)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(0).astype(float)
    pos_pred = conf[:-1, :-1].sum(1).astype(float)
    acc_valid = pos_gt > 0
    iou_valid = (pos_gt + pos_pred) > 0
    acc = np.full(n, np.nan)
    iou = np.full(n, np.nan)
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    iou[acc_valid] = tp[acc_valid] / (pos_gt + pos_pred - tp)[acc_valid]
    w = pos_gt / pos_gt.sum()
    return {
        "mIoU": 100 * iou[acc_valid].sum() / iou_valid.sum(),
        "fwIoU": 100 * (iou[acc_valid] * w[acc_valid]).sum(),
        "mACC": 100 * acc[acc_valid].sum() / acc_valid.sum(),
        "pACC": 100 * tp.sum() / pos_gt.sum(),
    }


def test_matches_detectron2_formula_on_random_maps():
    rng = np.random.default_rng(0)
    n = 7
    gt = rng.integers(0, n - 2, size=(30, 40))  # classes 5 and 6 never in the ground truth
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, n, size=gt.shape)
    cm = ConfusionMatrix(n)
    cm.update(pred, gt)
    assert cm.compute().summary() == pytest.approx(_detectron2_reference(pred, gt, n, 255))


def test_out_of_range_predictions_count_as_wrong():
    # gt [0, 0, 1]; pred [0, 255, 1]: the 255 pixel is a miss for class 0.
    # class 0: tp 1, pos_gt 2, pos_pred 1 → acc 1/2, iou 1/(2+1-1) = 1/2
    # class 1: tp 1, pos_gt 1, pos_pred 1 → acc 1, iou 1
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 255, 1]]), np.array([[0, 0, 1]]))
    m = cm.compute()
    assert m.acc == pytest.approx([50.0, 100.0])
    assert m.iou == pytest.approx([50.0, 100.0])
    assert m.pacc == pytest.approx(100 * 2 / 3)
    assert m.pos_pred.tolist() == [1, 1]
    cm2 = ConfusionMatrix(2)
    cm2.update(np.array([[-1]]), np.array([[1]]))  # negative prediction: also wrong
    assert cm2.compute().pacc == 0.0


def test_invalid_ground_truth_and_shapes_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.zeros((1, 2), int), np.array([[0, 3]]))
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.zeros((1, 1), int), np.array([[-1]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="integer"):
        cm.update(np.zeros((1, 1), float), np.zeros((1, 1), int))
    with pytest.raises(ValueError, match="ignore_label"):
        ConfusionMatrix(3, ignore_label=2)


def test_sixteen_bit_ignore_label():
    cm = ConfusionMatrix(847, ignore_label=65535)
    gt = np.array([[846, 300], [65535, 0]], dtype=np.uint16)
    pred = np.array([[846, 300], [5, 1]])
    cm.update(pred, gt)
    m = cm.compute()
    # three real pixels, two right; classes 846 and 300 perfect, class 0 missed
    assert m.pacc == pytest.approx(100 * 2 / 3)
    assert m.iou[846] == 100.0 and m.iou[300] == 100.0 and m.iou[0] == 0.0
    # valid for the mIoU denominator: 846, 300, 0 (gt) and 1 (predicted) → (1 + 1 + 0) / 4
    assert m.miou == pytest.approx(50.0)


def test_merge_and_dict_round_trip_equal_one_pass():
    whole = ConfusionMatrix(4)
    whole.update(PRED, GT)
    top, bottom = ConfusionMatrix(4), ConfusionMatrix(4)
    top.update(PRED[:1], GT[:1])
    bottom.update(PRED[1:], GT[1:])
    restored = ConfusionMatrix.from_dict(json.loads(json.dumps(top.to_dict())))
    restored.merge(ConfusionMatrix.from_dict(bottom.to_dict()))
    assert np.array_equal(restored.matrix, whole.matrix)
    assert restored.compute().miou == pytest.approx(100 * 7 / 18)
    # sparse: only the non-zero cells of row one, (pred, gt) = (0,0) x2, (1,0), (1,1)
    assert sorted(map(tuple, top.to_dict()["cells"])) == [(0, 0, 2), (1, 0, 1), (1, 1, 1)]
    with pytest.raises(ValueError):
        whole.merge(ConfusionMatrix(5))


def test_empty_matrix_gives_nan_not_errors():
    m = ConfusionMatrix(3).compute()
    assert all(math.isnan(v) for v in m.summary().values())


def test_per_class_csv(tmp_path):
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    m = cm.compute()
    path = tmp_path / "per_class.csv"
    path.write_text(per_class_csv(m, ["wall", "floor, ground", "sky", "tree"]), encoding="utf-8")
    rows = list(csv.DictReader(path.open()))
    assert [r["class_name"] for r in rows] == ["wall", "floor, ground", "sky", "tree"]
    assert float(rows[1]["iou"]) == pytest.approx(50.0)
    assert rows[2]["iou"] == "" and rows[2]["pred_pixels"] == "1"
    assert rows[0]["gt_pixels"] == "3" and rows[0]["tp_pixels"] == "2"
    with pytest.raises(ValueError):
        per_class_csv(m, ["only", "three", "names"])


# ----------------------------------------------------------------- semantic inference


def test_semantic_map_is_the_einsum_over_queries():
    masks = np.zeros((2, 2, 3), dtype=bool)
    masks[0, :, 0] = True  # query 0: left column
    masks[1, :, 1:] = True  # query 1: right two columns
    masks[0, 0, 2] = True  # overlap at (0, 2)
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    scores = semantic_map(masks, probs)
    assert scores.shape == (2, 2, 3)
    # (0, 2) is covered by both: class 0 = 0.9 + 0.2, class 1 = 0.1 + 0.8
    assert scores[:, 0, 2].tolist() == pytest.approx([1.1, 0.9])
    assert scores[:, 1, 1].tolist() == pytest.approx([0.2, 0.8])
    assert argmax_labels(scores).tolist() == [[0, 1, 0], [0, 1, 1]]


def test_semantic_map_soft_masks_torch():
    masks = torch.tensor([[[1.0, 0.5]], [[0.0, 0.5]]])  # (2, 1, 2)
    probs = torch.tensor([[0.6, 0.4], [0.1, 0.9]])
    scores = semantic_map(masks, probs)
    assert scores[:, 0, 1].tolist() == pytest.approx([0.35, 0.65])
    with pytest.raises(ValueError):
        semantic_map(masks, probs[:1])


def test_argmax_empty_label():
    scores = torch.zeros(3, 1, 2)
    scores[2, 0, 0] = 0.4
    assert argmax_labels(scores).tolist() == [[2, 0]]
    assert argmax_labels(scores, empty_label=255).tolist() == [[2, 255]]


def test_proposal_probs_drop_the_void_column():
    p = proposal_class_probs(torch.zeros(2, 4))
    assert p.shape == (2, 3)
    assert p.sum(dim=1).tolist() == pytest.approx([0.75, 0.75])


def test_ensemble_is_geometric_and_zero_means_clip_alone_as_ovseg():
    pp = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    pc = torch.tensor([[0.1, 0.9], [0.4, 0.6]])
    assert torch.allclose(ensemble_probs(pp, pc, 0.0), pc)  # OVSeg's CLIP_ENSEMBLE_WEIGHT 0: CLIP alone
    assert torch.allclose(ensemble_probs(pp, pc, 1.0), pc)
    assert torch.allclose(ensemble_probs(pp, pc, None), pc)
    half = ensemble_probs(pp.numpy(), pc.numpy(), 0.5)
    assert half[0].tolist() == pytest.approx([math.sqrt(0.08), math.sqrt(0.18)])
    with pytest.raises(ValueError):
        ensemble_probs(pp, pc, 1.5)


def test_ensemble_valid_flags_follow_ovseg():
    pp = torch.tensor([[0.8, 0.2], [0.36, 0.64]])
    pc = torch.tensor([[0.1, 0.9], [0.3, 0.7]])
    valid = np.array([True, False])
    mixed = ensemble_probs(pp, pc, 0.5, valid=valid)
    # the unclassified mask keeps p_proposal ** (1 - lam) (its CLIP prob is taken as 1)
    assert mixed[1].tolist() == pytest.approx([0.6, 0.8])
    clip_only = ensemble_probs(pp, pc, None, valid=valid)
    assert clip_only[1].tolist() == [0.0, 0.0]
    assert clip_only[0].tolist() == pytest.approx([0.1, 0.9])


def test_semantic_inference_ensemble_changes_the_decision():
    masks = np.ones((1, 1, 1), dtype=bool)
    pp = np.array([[0.8, 0.2]])
    pc = np.array([[0.1, 0.9]])
    assert semantic_inference(masks, pp).item() == 0
    assert semantic_inference(masks, pp, pc, lam=0.0).item() == 1  # CLIP alone, as OVSeg's weight 0
    assert semantic_inference(masks, pp, pc, lam=0.5).item() == 1  # sqrt(.08) < sqrt(.18)
    assert semantic_inference(masks, None, pc, lam=None).item() == 1
    with pytest.raises(ValueError):
        semantic_inference(masks, None, pc, lam=0.5)


def test_templates():
    assert len(VILD_TEMPLATES) == 14 and len(set(VILD_TEMPLATES)) == 14
    assert all(t.count("{}") == 1 for t in VILD_TEMPLATES)
    assert VILD_TEMPLATES[1] == "This is a photo of a {}"  # no period, as in ViLD/OVSeg
    assert SIMPLE_TEMPLATES == ("a photo of a {}.",)
    assert TEMPLATE_SETS["vild"] is VILD_TEMPLATES
