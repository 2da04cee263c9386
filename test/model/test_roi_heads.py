"""ROI box stage, classifier and the known/unknown post-processing (METHOD.md 1.3, 1.4, 1.6)."""
import math

import pytest
import torch
from torch import nn

from semseg_core.constants import UNKNOWN_ID
from semseg_core.modeling.cf_rpn import Proposals
from semseg_core.modeling.classifier import SoftmaxClassifier
from semseg_core.modeling.modulated_mask_head import ModulatedMaskHead
from semseg_core.modeling.poolers import ROIPooler, assign_boxes_to_levels
from semseg_core.modeling.prototypes import PrototypeEmbedding
from semseg_core.modeling.roi_heads import BoxHead, BoxPredictor, OpenSetROIHeads
from torchvision.ops import roi_align

torch.set_num_threads(1)
K = 2


def make_heads(mask=False, **kw):
    torch.manual_seed(0)
    c, fc = 4, 16
    box_head = BoxHead(in_channels=c, resolution=7, fc_dim=fc)
    mask_pooler = ROIPooler(output_size=14, strides=[4, 8, 16, 32]) if mask else None
    mask_head = ModulatedMaskHead(in_channels=c, conv_dim=8, num_conv=2, mask_emb_dim=4, emd_dim=8) if mask else None
    return OpenSetROIHeads(box_pooler=ROIPooler(output_size=7, strides=[4, 8, 16, 32]), box_head=box_head,
                           box_predictor=BoxPredictor(in_dim=fc),
                           embedding=PrototypeEmbedding(in_dim=fc, emd_dim=8, num_classes=K),
                           classifier=SoftmaxClassifier(in_dim=fc, num_classes=K), mask_pooler=mask_pooler,
                           mask_head=mask_head, **kw)


def features(c=4, size=64):
    g = torch.Generator().manual_seed(1)
    return {f"p{k}": torch.randn(1, c, size // 2 ** (k - 2), size // 2 ** (k - 2), generator=g) for k in (2, 3, 4, 5)}


def test_level_mapping_and_aligned_pooling():
    boxes = torch.tensor([[0.0, 0, 224, 224], [0.0, 0, 112, 112], [0.0, 0, 448, 448], [0.0, 0, 10, 10],
                          [0.0, 0, 1000, 1000], [0.0, 0, 111, 113]])
    # floor(4 + log2(sqrt(area) / 224)), clamped to [2, 5], minus 2
    assert assign_boxes_to_levels(boxes, 2, 5).tolist() == [2, 1, 3, 0, 3, 0]
    feats = [torch.randn(1, 3, 16 >> i, 16 >> i) for i in range(4)]
    box = torch.tensor([[3.0, 5.0, 40.0, 30.0]])  # sqrt(area) ~ 30 -> level p2
    out = ROIPooler(output_size=7, strides=[4, 8, 16, 32])(feats, [box])
    ref = roi_align(feats[0], [box], (7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)
    assert torch.allclose(out, ref)
    not_aligned = roi_align(feats[0], [box], (7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=False)
    assert not torch.allclose(out, not_aligned)


def test_proposal_sampling_appends_gt_and_matches_at_half():
    heads = make_heads(batch_size_per_image=1000, positive_fraction=1.0)
    proposals = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 20], [0.0, 0, 10, 40]])
    s = heads.sample_proposals(proposals, torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([1]))
    assert len(s["boxes"]) == 4  # GT appended
    order = torch.argsort(s["ious"], descending=True)
    assert s["ious"][order].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.25])
    assert s["gt_classes"][order].tolist() == [1, 1, 1, K]  # IoU >= 0.5 foreground, else background K
    heads.batch_size_per_image, heads.positive_fraction = 2, 0.5
    s = heads.sample_proposals(proposals, torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([1]))
    assert s["gt_classes"].tolist() == [1, K]  # 1 fg (fraction cap) + 1 bg, fg first


def test_box_iou_cls_losses_use_total_roi_normaliser():
    heads = make_heads(batch_size_per_image=1000, positive_fraction=1.0).train()
    for layer in (heads.box_predictor.bbox_pred, heads.box_predictor.iou_pred, heads.classifier.cls_score):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    proposals = [Proposals(boxes=torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 20], [0.0, 0, 10, 40]]),
                           centerness=torch.ones(3))]
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "classes": torch.tensor([1])}]
    losses = heads(features(), proposals, [(64, 64)], targets)
    # 4 ROIs (3 proposals + GT), 3 foreground with IoU 1, 0.5, 1; zero predictions: deltas 0, sigmoid 0.5
    assert losses["loss_iou"].item() == pytest.approx((0.5 + 0.0 + 0.5) / 4 * 1.0)
    assert losses["loss_box_reg"].item() == pytest.approx((2.5 + 5 * math.log(2)) / 4 * 2.0, rel=1e-5)
    assert losses["loss_cls"].item() == pytest.approx(math.log(K + 1), rel=1e-5)  # mean CE over all ROIs
    assert set(losses) == {"loss_box_reg", "loss_iou", "loss_dml", "loss_cls"}


def test_known_scored_by_class_prob_unknown_by_objectness():
    cls = SoftmaxClassifier(in_dim=4, num_classes=K, known_score_thresh=0.05, known_nms_thresh=0.5, known_topk=50,
                            unknown_score_thresh=0.05, unknown_nms_thresh=0.5, unknown_topk=50)
    boxes = torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60], [0.0, 0, 10, 10], [80.0, 80, 90, 90]])
    objectness = torch.tensor([0.9, 0.3, 0.8, 0.04])
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    logits = probs.log()
    unknown = torch.tensor([False, False, True, True])
    rows, scores, classes, is_unk = cls.select(boxes, objectness, logits, unknown)
    # unknowns first: row 2 scored by objectness 0.8; row 3 dropped (0.04 <= 0.05)
    assert rows.tolist()[0] == 2 and is_unk.tolist()[0] and scores[0].item() == pytest.approx(0.8)
    known = [(r, c, round(s, 4)) for r, c, s, u in zip(rows.tolist(), classes.tolist(), scores.tolist(), is_unk.tolist()) if not u]
    # knowns: class probability only (not x objectness); one box can give several classes; bg column dropped
    assert known == [(0, 0, 0.7), (0, 1, 0.2), (1, 0, 0.1), (1, 1, 0.1)]
    # no NMS across the sets: the unknown box identical to known row 0 survives
    assert is_unk.sum() == 1


def test_per_image_caps_and_order():
    cls = SoftmaxClassifier(in_dim=4, num_classes=K, known_topk=50, unknown_topk=50)
    n = 200
    xs = torch.arange(n, dtype=torch.float32) * 20  # disjoint boxes: NMS removes nothing
    boxes = torch.stack([xs, xs * 0, xs + 10, xs * 0 + 10], dim=1)
    objectness = torch.linspace(0.1, 0.9, n)
    logits = torch.randn(n, K + 1, generator=torch.Generator().manual_seed(0))
    unknown = torch.arange(n) % 2 == 0
    rows, scores, classes, is_unk = cls.select(boxes, objectness, logits, unknown)
    assert is_unk.sum() == 50 and (~is_unk).sum() == 50
    assert is_unk[:50].all() and not is_unk[50:].any()  # unknowns first
    assert (classes[:50] == -1).all()
    assert torch.all(scores[:50][:-1] >= scores[:50][1:]) and torch.all(scores[50:][:-1] >= scores[50:][1:])
    # NMS inside each set: overlapping unknowns collapse to one
    same = torch.tensor([[0.0, 0, 10, 10]] * 3)
    rows, _, _, is_unk = cls.select(same, torch.tensor([0.5, 0.9, 0.7]), torch.zeros(3, K + 1), torch.ones(3, dtype=torch.bool))
    assert rows.tolist() == [1]


def test_first_stage_score_and_unknown_label():
    heads = make_heads(obj_score_thresh=0.05).eval()
    nn.init.zeros_(heads.box_predictor.bbox_pred.weight)
    nn.init.zeros_(heads.box_predictor.bbox_pred.bias)
    nn.init.zeros_(heads.box_predictor.iou_pred.weight)
    nn.init.constant_(heads.box_predictor.iou_pred.bias, math.log(0.64 / 0.36))  # sigmoid = 0.64
    heads.embedding.unknown_threshold = -1.0  # everything unknown -> scores are the objectness
    boxes = torch.tensor([[0.0, 0, 20, 20], [30.0, 30, 60, 60], [5.0, 40, 25, 60]])
    ctr = torch.tensor([0.25, 1.0, 0.001])
    (result,) = heads(features(), [Proposals(boxes=boxes, centerness=ctr)], [(64, 64)])
    # s = sqrt(0.64 * ctr): 0.4, 0.8, 0.025 (dropped: <= 0.05); sorted descending
    assert result["scores"].tolist() == pytest.approx([0.8, 0.4], rel=1e-5)
    assert result["classes"].tolist() == [UNKNOWN_ID, UNKNOWN_ID]
    assert result["boxes"].tolist() == [[30.0, 30, 60, 60], [0.0, 0, 20, 20]]
    assert result["embeddings"].shape == (2, 8) and result["unknown_scores"].shape == (2,)
    heads.embedding.unknown_threshold = float("inf")  # never unknown -> only known detections
    (result,) = heads(features(), [Proposals(boxes=boxes, centerness=ctr)], [(64, 64)])
    assert (result["classes"] != UNKNOWN_ID).all() and len(result["classes"]) > 0
