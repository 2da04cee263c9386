"""Embedding, prototypes, double-margin loss and the unknown decision (METHOD.md 1.4, 1.6)."""
import math

import pytest
import torch

from semseg_core.modeling.prototypes import PrototypeEmbedding

torch.set_num_threads(1)


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def make(num_classes=2, **kw):
    emb = PrototypeEmbedding(in_dim=4, emd_dim=2, num_classes=num_classes, alpha=0.05, beta=0.95,
                             iou_threshold=0.5, loss_weight=2.0, unknown_threshold=0.085, **kw)
    return emb


def test_double_margin_loss_hand_computed():
    emb = make()
    with torch.no_grad():
        emb.prototypes.copy_(torch.tensor([unit(0), unit(80)]) * 3.0)  # scale is irrelevant: normalised on use
    e = torch.tensor([unit(0), unit(60), unit(30), unit(10), unit(70)])
    classes = torch.tensor([0, 0, 0, 2, 1])  # class 2 = background
    ious = torch.tensor([0.9, 0.8, 0.5, 0.9, 0.7])  # IoU exactly 0.5 is NOT a DML positive (strict >)
    num_rois = 8
    loss = emb.loss(e, classes, ious, num_rois)["loss_dml"].item()
    d = lambda a, b: 1 - math.cos(math.radians(a - b))  # noqa: E731
    attraction = max(d(0, 0) - 0.05, 0) + max(d(60, 0) - 0.05, 0) + max(d(70, 80) - 0.05, 0)
    repulsion = max(0.95 - d(0, 80), 0) + max(0.95 - d(60, 80), 0) + max(0.95 - d(70, 0), 0)
    separation = 2 * max(1.0 - d(0, 80), 0)  # alpha + beta - min distance to another prototype, per prototype
    assert separation > 0 and repulsion > 0 and attraction > 0
    assert loss == pytest.approx((attraction + repulsion + separation) / num_rois * 2.0, rel=1e-5)


def test_separation_term_alone_and_gradients():
    emb = make()
    with torch.no_grad():
        emb.prototypes.copy_(torch.tensor([unit(0), unit(45)]))
    loss = emb.loss(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0), 4)["loss_dml"]
    assert loss.item() == pytest.approx(2 * (1.0 - (1 - math.cos(math.radians(45)))) / 4 * 2.0, rel=1e-5)
    loss.backward()
    assert emb.prototypes.grad.abs().sum() > 0
    # orthogonal (or farther) prototypes: no separation loss
    with torch.no_grad():
        emb.prototypes.copy_(torch.tensor([unit(0), unit(135)]))
    assert emb.loss(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0), 4)["loss_dml"].item() == 0


def test_unknown_decision_at_threshold_boundary():
    emb = make()
    with torch.no_grad():
        emb.prototypes.copy_(torch.tensor([unit(0), unit(90)]))
    e = torch.tensor([unit(5), unit(30), unit(45)])
    d_min, nearest = emb.min_distance(e)
    d_min = d_min.detach()
    assert d_min.tolist() == pytest.approx([1 - math.cos(math.radians(a)) for a in (5, 30, 45)], abs=1e-6)
    assert nearest.tolist()[:2] == [0, 0]
    assert emb.is_unknown(d_min).tolist() == [False, True, True]  # 0.0038 <= 0.085 < 0.134
    emb.unknown_threshold = float(d_min[1])  # exactly at the threshold: still known (strict >)
    assert emb.is_unknown(d_min).tolist() == [False, False, True]
    emb.unknown_threshold = float(d_min[1]) - 1e-6
    assert emb.is_unknown(d_min).tolist() == [False, True, True]
    emb.unknown_threshold = float("inf")  # evaluation switch: never unknown
    assert not emb.is_unknown(d_min).any()


def test_forward_unit_embedding_and_decoder_on_unnormalised_code():
    torch.manual_seed(0)
    emb = PrototypeEmbedding(in_dim=16, emd_dim=8, num_classes=3)
    f = torch.randn(5, 16)
    e, r = emb(f)
    assert torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-6)
    z = emb.encoder(f)
    assert torch.allclose(r, emb.decoder(z))  # decoder reads z, not e
    assert emb.prototypes.shape == (3, 8)


def test_reps_per_class_uses_nearest_rep_of_each_class():
    emb = make(num_classes=2, reps_per_class=2)
    with torch.no_grad():
        emb.prototypes.copy_(torch.tensor([unit(0), unit(40), unit(90), unit(180)]))
    cd = emb.class_distances(torch.tensor([unit(35)]))
    assert cd[0].tolist() == pytest.approx([1 - math.cos(math.radians(5)), 1 - math.cos(math.radians(55))], abs=1e-6)


def test_bad_distance_type_is_rejected():
    with pytest.raises(ValueError, match="DISTANCE_TYPE"):
        PrototypeEmbedding(in_dim=4, emd_dim=2, num_classes=2, distance_type="dot")
