"""CF-RPN rules with hand-computed expectations (METHOD.md 1.2)."""
import math

import pytest
import torch

from semseg_core.modeling.anchors import AnchorGenerator
from semseg_core.modeling.box_regression import Box2BoxTransform, Box2BoxTransformLinear, iou_loss
from semseg_core.modeling.cf_rpn import CFRPN, CFRPNHead, centerness_targets
from semseg_core.modeling.matcher import Matcher, sample_binary_labels

torch.set_num_threads(1)


def make_rpn(batch_size=256, **kw):
    return CFRPN(head=CFRPNHead(in_channels=8), anchor_generator=AnchorGenerator(sizes=[32], strides=[4]),
                 in_features=["p2"], batch_size_per_image=batch_size, **kw)


def test_centerness_target_hand_computed():
    # anchor centre (50, 50); GT sides at l=10, t=20, r=20, b=40 -> sqrt(10/20 * 20/40) = 0.5
    anchors = torch.tensor([[34.0, 34, 66, 66], [34.0, 34, 66, 66], [0.0, 0, 20, 20], [34.0, 34, 66, 66]])
    gts = torch.tensor([[40.0, 30, 70, 90], [0.0, 0, 100, 100], [40.0, 30, 70, 90], [50.0, 30, 70, 90]])
    ctr = centerness_targets(anchors, gts)
    assert ctr[0].item() == pytest.approx(0.5)
    assert ctr[1].item() == pytest.approx(1.0)  # centred in the box
    assert ctr[2].item() == 0.0  # centre (10, 10) outside the box
    assert ctr[3].item() == 0.0  # centre on the box border


def test_matcher_bands_and_low_quality_matches():
    # rows = 2 GT, columns = 5 predictions
    iou = torch.tensor([[0.80, 0.50, 0.20, 0.05, 0.00],
                        [0.10, 0.20, 0.25, 0.00, 0.25]])
    matches, labels = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=False)(iou)
    assert labels.tolist() == [1, -1, 0, 0, 0]
    assert matches.tolist()[:3] == [0, 0, 1]
    # GT 1's best IoU (0.25) is shared by predictions 2 and 4: both become positive.
    _, labels = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)(iou)
    assert labels.tolist() == [1, -1, 1, 0, 1]
    # centerness matcher: <0.1 negative, [0.1, 0.3) ignored, >= 0.3 positive
    _, labels = Matcher(thresholds=[0.1, 0.3], labels=[0, -1, 1], allow_low_quality_matches=False)(iou)
    assert labels.tolist() == [1, 1, -1, 0, -1]
    # no ground truth: everything negative
    _, labels = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)(torch.zeros(0, 3))
    assert labels.tolist() == [0, 0, 0]


def test_rpn_anchor_labelling_uses_two_matchers():
    rpn = make_rpn(batch_size=100)
    gt = torch.tensor([[0.0, 0, 10, 10]])
    anchors = torch.tensor([[0.0, 0, 10, 10],   # IoU 1
                            [0.0, 0, 10, 20],   # IoU 0.5
                            [0.0, 0, 10, 40],   # IoU 0.25
                            [0.0, 0, 10, 100],  # IoU 0.1
                            [20.0, 20, 30, 30]])  # IoU 0
    reg_labels, reg_gt, ctr_labels, ctr_t = rpn.label_anchors(anchors, gt)
    assert reg_labels.tolist() == [1, -1, 0, 0, 0]
    assert ctr_labels.tolist() == [1, 1, -1, -1, 0]
    assert torch.equal(reg_gt[0], gt[0])
    # anchor 0 centred in the GT -> 1; anchor 1's centre (5, 10) lies on the GT border -> 0
    assert ctr_t.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.0])


def test_sampling_positive_fractions():
    labels = torch.zeros(1000, dtype=torch.int8)
    labels[:10] = 1
    labels[10:20] = -1
    for frac in (0.5, 1.0):
        out = sample_binary_labels(labels, 256, frac)
        assert (out == 1).sum() == 10 and (out == 0).sum() == 246 and (out[10:20] == -1).all()
    labels[:300] = 1
    out = sample_binary_labels(labels, 256, 0.5)
    assert (out == 1).sum() == 128 and (out == 0).sum() == 128
    out = sample_binary_labels(labels, 256, 1.0)  # centerness: fill with positives first
    assert (out == 1).sum() == 256 and (out == 0).sum() == 0


def test_iou_loss_is_plain_one_minus_iou():
    pred = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    target = torch.tensor([[0.0, 0, 10, 20], [0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    # 1 - 0.5, 1 - 1, 1 - 1e-6 (clamped)
    assert iou_loss(pred, target).item() == pytest.approx(0.5 + 0.0 + (1 - 1e-6))


def test_linear_transform_relu_decode_and_round_trip():
    t = Box2BoxTransformLinear(normalize_by_size=True)
    anchors = torch.tensor([[0.0, 0, 32, 32]])
    target = torch.tensor([[4.0, 8, 40, 20]])
    deltas = t.get_deltas(anchors, target)
    assert deltas.tolist() == [[12 / 32, 8 / 32, 24 / 32, 4 / 32]]
    assert torch.allclose(t.apply_deltas(deltas, anchors), target)
    # negative distances are clipped by ReLU: the box always contains the anchor centre
    decoded = t.apply_deltas(torch.tensor([[-1.0, -1.0, 0.5, 0.5]]), anchors)
    assert decoded.tolist() == [[16.0, 16.0, 32.0, 32.0]]


def test_box2box_transform_weights_and_clamp():
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0, 10, 20]])
    tgt = torch.tensor([[0.0, 0, 10, 10]])
    d = t.get_deltas(src, tgt)
    assert d[0].tolist() == pytest.approx([0.0, -2.5, 0.0, 5 * math.log(0.5)])
    assert torch.allclose(t.apply_deltas(d, src), tgt, atol=1e-5)
    big = t.apply_deltas(torch.tensor([[0.0, 0.0, 1000.0, 0.0]]), src)
    assert (big[0, 2] - big[0, 0]).item() == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_anchor_positions_and_order():
    anchors = AnchorGenerator(sizes=[32], strides=[4])([torch.zeros(1, 1, 2, 3)])[0]
    assert anchors.shape == (6, 4)
    assert anchors[0].tolist() == [-16.0, -16.0, 16.0, 16.0]
    assert anchors[1].tolist() == [-12.0, -16.0, 20.0, 16.0]  # next column
    assert anchors[3].tolist() == [-16.0, -12.0, 16.0, 20.0]  # next row


def test_head_normalises_hidden_feature():
    torch.manual_seed(0)
    head = CFRPNHead(in_channels=8)
    torch.nn.init.zeros_(head.conv.bias)
    x = torch.randn(1, 8, 5, 5)
    c1, d1 = head([x])
    c2, d2 = head([x * 7.0])  # ReLU(conv(7x)) = 7 ReLU(conv(x)); L2 normalisation removes the 7
    assert torch.allclose(c1[0], c2[0], atol=1e-5) and torch.allclose(d1[0], d2[0], atol=1e-5)


def test_proposals_per_level_topk_without_nms_and_with_switch():
    rpn = make_rpn(pre_nms_topk=(2, 2), post_nms_topk=(10, 10), nms_thresh=(0.7, 0.7)).eval()
    anchors = [torch.tensor([[0.0, 0, 10, 10]] * 3), torch.tensor([[20.0, 20, 40, 40], [60.0, 60, 70, 70]])]
    ctr = [torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([[2.0, -1.0]])]
    deltas = [torch.zeros(1, 3, 4) + 0.5, torch.zeros(1, 2, 4) + 0.5]
    (boxes, scores), = rpn.select_proposals(anchors, ctr, deltas, [(100, 100)])
    # level 0 keeps its top 2 (identical boxes, no NMS), level 1 both; scores are sigmoids
    assert len(boxes) == 4
    assert scores.tolist() == pytest.approx(torch.sigmoid(torch.tensor([3.0, 1.0, 2.0, -1.0])).tolist())
    rpn.apply_nms = True
    (boxes, scores), = rpn.select_proposals(anchors, ctr, deltas, [(100, 100)])
    assert len(boxes) == 3  # the duplicate on level 0 is suppressed
    # clipping and empty-box removal
    rpn.apply_nms = False
    (boxes, _), = rpn.select_proposals([torch.tensor([[-20.0, -20, -10, -10], [90.0, 90, 110, 110]])],
                                       [torch.tensor([[1.0, 0.0]])], [torch.zeros(1, 2, 4) + 0.1], [(100, 100)])
    assert boxes.tolist() == [[98.0, 98.0, 100.0, 100.0]]  # centre (100, 100) +- 2, clipped


def test_rpn_loss_normaliser_and_weights():
    torch.manual_seed(0)
    rpn = make_rpn(batch_size=1000, loc_loss_weight=10.0, ctr_loss_weight=1.0).train()
    for layer in (rpn.head.box_deltas, rpn.head.centerness):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    feats = {"p2": torch.randn(2, 8, 6, 6)}
    gt = [torch.tensor([[4.0, 4, 36, 36]]), torch.tensor([[0.0, 0, 20, 20]])]
    _, losses = rpn([(24, 24), (24, 24)], feats, gt)
    anchors = rpn.anchor_generator([feats["p2"]])[0]
    n_pos, ctr_sum = 0, 0.0
    for g in gt:
        reg_labels, _, ctr_labels, ctr_t = rpn.label_anchors(anchors, g)
        n_pos += int((reg_labels == 1).sum())
        ctr_sum += float((0.5 - ctr_t[ctr_labels >= 0]).abs().sum())
    # zero deltas decode to points -> IoU clamped to 1e-6; sigmoid(0) = 0.5
    assert losses["loss_rpn_loc"].item() == pytest.approx(n_pos * (1 - 1e-6) / 2000 * 10.0, rel=1e-5)
    assert losses["loss_rpn_ctr"].item() == pytest.approx(ctr_sum / 2000, rel=1e-5)
    assert n_pos > 0
