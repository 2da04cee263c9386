"""SemSeg meta-architecture: preprocessing, training losses and inference outputs (tiny and full R50)."""
import pytest
import torch

from semseg_core.config import load_config
from semseg_core.constants import UNKNOWN_ID
from semseg_core.modeling import LOSS_KEYS, build_model

torch.set_num_threads(2)


def tiny_cfg(*overrides):
    return load_config("config/models/Synthetic/semseg_tiny.yaml", overrides=["MODEL.DEVICE", "cpu", *overrides])


def sample(h=96, w=128, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[10.0, 8, 60, 50], [70.0, 40, 120, 90]])[:n]
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = 1
    return {"image": img, "height": h, "width": w, "image_id": 1,
            "instances": {"boxes": boxes, "classes": torch.tensor([0, 3])[:n], "masks": masks}}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def test_preprocess_normalises_then_pads_with_zeros(tiny_model):
    a = {"image": torch.full((3, 50, 70), 200, dtype=torch.uint8)}
    b = {"image": torch.full((3, 40, 30), 10, dtype=torch.uint8)}
    batch, sizes = tiny_model.preprocess([a, b])
    assert batch.shape == (2, 3, 64, 96) and sizes == [(50, 70), (40, 30)]
    mean = torch.tensor([123.675, 116.28, 103.53])
    std = torch.tensor([58.395, 57.12, 57.375])
    assert torch.allclose(batch[0, :, 10, 10], (200 - mean) / std)
    assert torch.allclose(batch[1, :, 0, 0], (10 - mean) / std)
    assert (batch[0, :, 50:, :] == 0).all() and (batch[0, :, :, 70:] == 0).all()
    assert (batch[1, :, 40:, :] == 0).all() and (batch[1, :, :, 30:] == 0).all()


def test_tiny_train_step_and_inference(tiny_model, monkeypatch):
    model = tiny_model
    model.train()
    losses = model([sample(seed=0), sample(seed=1, n=1)])
    assert tuple(sorted(losses)) == tuple(sorted(LOSS_KEYS))
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.rpn.head.conv.weight.grad is not None and model.roi_heads.embedding.prototypes.grad is not None
    model.zero_grad()
    # an image without annotations still trains (all background)
    empty = sample()
    empty["instances"] = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
                          "masks": torch.zeros(0, 96, 128, dtype=torch.uint8)}
    assert all(torch.isfinite(v) for v in model([empty]).values())

    model.eval()
    # Zero score thresholds force detections out of the random model, so every output assert below runs;
    # the unknown distance threshold decides the set: default (all unknown here) and infinity (none unknown).
    monkeypatch.setattr(model.roi_heads, "obj_score_thresh", 0.0)
    monkeypatch.setattr(model.roi_heads.classifier, "known_score_thresh", 0.0)
    monkeypatch.setattr(model.roi_heads.classifier, "unknown_score_thresh", 0.0)
    item = sample()
    item["height"], item["width"] = 192, 64  # original size differs from the network input
    for unknown_threshold in (model.roi_heads.embedding.unknown_threshold, float("inf")):
        monkeypatch.setattr(model.roi_heads.embedding, "unknown_threshold", unknown_threshold)
        (out,) = model([item])
        n = len(out["boxes"])
        assert n > 0
        assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,) and out["classes"].dtype == torch.int64
        assert out["embeddings"].shape == (n, 64) and out["unknown_scores"].shape == (n,)
        assert out["mask_probs"].shape == (n, 1, 28, 28)
        assert n <= 20 + 20  # KNOWN_TOPK + UNKNOWN_TOPK of the tiny config
        assert (out["boxes"][:, 0::2] <= 64).all() and (out["boxes"][:, 1::2] <= 192).all()
        ok = (out["classes"] == UNKNOWN_ID) | ((out["classes"] >= 0) & (out["classes"] < 6))
        assert ok.all()
        assert torch.allclose(out["embeddings"].norm(dim=1), torch.ones(n), atol=1e-5)
    assert (out["classes"] != UNKNOWN_ID).all(), "an infinite unknown threshold leaves only known classes"


def test_bad_inputs_raise_clear_errors(tiny_model):
    model = tiny_model
    model.eval()
    with pytest.raises(ValueError, match="uint8"):
        model([{"image": torch.zeros(3, 32, 32)}])
    with pytest.raises(ValueError, match="3 x H x W"):
        model([{"image": torch.zeros(32, 32, 3, dtype=torch.uint8)}])
    with pytest.raises(ValueError, match="non-empty list"):
        model([])
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])
    bad = sample()
    bad["instances"]["classes"] = torch.tensor([0, 7])
    with pytest.raises(ValueError, match="known-class indices"):
        model([bad])
    model.eval()


def test_mask_off_and_emd_dim_not_tied_to_conv_dim():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.MASK_ON", "False", "MODEL.DML.EMD_DIM", "24"))
    assert model.roi_heads.mask_head is None
    model.train()
    assert "loss_mask" not in model([sample()])
    model = build_model(tiny_cfg("MODEL.DML.EMD_DIM", "24"))  # kernel MLP input follows EMD_DIM
    model.train()
    assert torch.isfinite(model([sample()])["loss_mask"])
    model.eval()
    assert model([sample()])[0]["embeddings"].shape[1] == 24


@pytest.mark.slow
def test_full_r50_model_builds_trains_and_infers_on_cpu():
    cfg = load_config("config/models/COCO/semseg_R50_FPN_128k.yaml", overrides=["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    names = dict(model.named_parameters())
    assert names["roi_heads.box_head.fc1.weight"].shape == (1024, 256 * 7 * 7)
    assert names["roi_heads.embedding.prototypes"].shape == (20, 256)
    assert names["roi_heads.classifier.cls_score.weight"].shape == (21, 1024)
    assert names["roi_heads.mask_head.kernel_mlp.0.weight"].shape == (256, 256)
    assert names["roi_heads.mask_head.kernel_mlp.2.weight"].shape == (128, 256)
    assert names["rpn.head.box_deltas.weight"].shape == (4, 256, 1, 1)
    assert names["rpn.head.centerness.weight"].shape == (1, 256, 1, 1)
    item = sample(320, 320)
    item["image"] = torch.randint(0, 256, (3, 320, 320), dtype=torch.uint8)
    model.train()
    losses = model([item])
    assert set(losses) == set(LOSS_KEYS) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": item["image"], "height": 480, "width": 480}])
    assert len(out["boxes"]) <= 100 and out["mask_probs"].shape[1:] == (1, 28, 28)
    assert (out["boxes"] <= 480).all()
