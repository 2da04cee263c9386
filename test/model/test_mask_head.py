"""Class-semantics-modulated mask head and mask pasting (METHOD.md 1.5)."""
import pytest
import torch
from torch.nn import functional as F

from semseg_core.config import load_config
from semseg_core.modeling.modulated_mask_head import ModulatedMaskHead, crop_and_resize
from semseg_core.modeling.postprocess import paste_masks, rescale_detections
from semseg_core.modeling.cf_rpn import Proposals
from semseg_core.modeling.poolers import ROIPooler
from semseg_core.modeling.prototypes import PrototypeEmbedding
from semseg_core.modeling.classifier import SoftmaxClassifier
from semseg_core.modeling.roi_heads import BoxHead, BoxPredictor, OpenSetROIHeads

torch.set_num_threads(1)


def test_kernel_shape_and_bias_free_dynamic_conv():
    torch.manual_seed(0)
    head = ModulatedMaskHead(in_channels=6, conv_dim=8, num_conv=4, mask_emb_dim=5, emd_dim=8)
    assert [n for n, _ in head.named_children()] == [
        "mask_fcn1", "mask_fcn2", "mask_fcn3", "mask_fcn4", "deconv", "post_conv", "kernel_mlp"]
    pooled = torch.randn(3, 6, 14, 14)
    e = F.normalize(torch.randn(3, 8), dim=1)
    kernels = head.kernels(e)
    assert kernels.shape == (3, 5)
    logits = head(pooled, e)
    assert logits.shape == (3, 1, 28, 28)
    feats = head.mask_features(pooled)
    assert feats.shape == (3, 5, 28, 28)
    for i in range(3):  # each instance = its own 1x1 conv without bias over the 5-channel map
        ref = F.conv2d(feats[i:i + 1], kernels[i].view(1, 5, 1, 1))
        assert torch.allclose(logits[i:i + 1], ref, atol=1e-5)


def test_faithful_shapes_and_emd_dim_decoupled_from_conv_dim():
    head = ModulatedMaskHead(in_channels=256, conv_dim=256, num_conv=4, mask_emb_dim=128)
    assert head.kernel_mlp[0].weight.shape == (256, 256) and head.kernel_mlp[2].weight.shape == (128, 256)
    assert head.post_conv.weight.shape == (128, 256, 3, 3) and head.deconv.weight.shape == (256, 256, 2, 2)
    small = ModulatedMaskHead(in_channels=4, conv_dim=8, num_conv=2, mask_emb_dim=4, emd_dim=12)
    out = small(torch.randn(2, 4, 14, 14), F.normalize(torch.randn(2, 12), dim=1))
    assert out.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="embeddings"):
        small(torch.randn(2, 4, 14, 14), torch.randn(3, 12))


def test_mask_loss_gradients_reach_embedding_encoder_and_box_head():
    torch.manual_seed(0)
    c, fc = 4, 16
    heads = OpenSetROIHeads(
        box_pooler=ROIPooler(output_size=7, strides=[4, 8, 16, 32]),
        box_head=BoxHead(in_channels=c, resolution=7, fc_dim=fc), box_predictor=BoxPredictor(in_dim=fc),
        embedding=PrototypeEmbedding(in_dim=fc, emd_dim=8, num_classes=2),
        classifier=SoftmaxClassifier(in_dim=fc, num_classes=2),
        mask_pooler=ROIPooler(output_size=14, strides=[4, 8, 16, 32]),
        mask_head=ModulatedMaskHead(in_channels=c, conv_dim=8, num_conv=2, mask_emb_dim=4, emd_dim=8),
        batch_size_per_image=16).train()
    feats = {f"p{k}": torch.randn(1, c, 64 >> (k - 2), 64 >> (k - 2)) for k in (2, 3, 4, 5)}
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:30] = 1
    targets = [{"boxes": torch.tensor([[12.0, 10, 30, 40]]), "classes": torch.tensor([1]), "masks": masks}]
    proposals = [Proposals(boxes=torch.tensor([[10.0, 10, 30, 40], [0.0, 0, 60, 60]]), centerness=torch.ones(2))]
    losses = heads(feats, proposals, [(64, 64)], targets)
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"].item() > 0
    losses["loss_mask"].backward()  # only the mask loss
    assert heads.embedding.encoder.weight.grad.abs().sum() > 0  # the embedding is not detached
    assert heads.box_head.fc1.weight.grad.abs().sum() > 0
    assert heads.mask_head.kernel_mlp[0].weight.grad.abs().sum() > 0
    assert heads.embedding.prototypes.grad is None  # prototypes are not on the mask path


def test_crop_and_resize_targets():
    masks = torch.zeros(2, 20, 20, dtype=torch.uint8)
    masks[0, 4:12, 4:12] = 1
    masks[1, :, :10] = 1  # left half
    boxes = torch.tensor([[4.0, 4, 12, 12], [0.0, 0, 20, 20]])
    t = crop_and_resize(masks, boxes, 28)
    assert t.dtype == torch.bool and t.shape == (2, 28, 28)
    # detectron2 samples half-pixel-aligned: the first bin centre (3.64) reads 0.64 of pixel 4, so border
    # cells are in (0.64 >= 0.5) but the corners read 0.64 * 0.64 = 0.41 and are out.
    assert t[0, 1:-1].all() and t[0, :, 1:-1].all()
    assert not t[0, 0, 0] and not t[0, -1, -1] and t[0, 0, 1]
    assert t[1, :, :14].all() and not t[1, :, 14:].any()


def test_paste_masks_hand_made():
    m = torch.ones(1, 1, 28, 28)
    # Box [2.5, 2.5, 6.5, 6.5]: pixel centres 2.5 and 6.5 lie on the box edges, where bilinear sampling
    # with zero padding reads 0.5 (in, >= 0.5); at the 4 corners it reads 0.5 * 0.5 = 0.25 (out).
    out = paste_masks(m, torch.tensor([[2.5, 2.5, 6.5, 6.5]]), 10, 12)
    assert out.shape == (1, 10, 12) and out.dtype == torch.bool
    expected = torch.zeros(10, 12, dtype=torch.bool)
    expected[2:7, 2:7] = True
    expected[2, 2] = expected[2, 6] = expected[6, 2] = expected[6, 6] = False
    assert torch.equal(out[0], expected)
    # left half of the mask on; box [0, 0, 8, 4] -> columns 0..3 in, 4..7 out (pixel centre 4.5 > 4)
    half = torch.zeros(1, 28, 28)
    half[:, :, :14] = 1
    out = paste_masks(half, torch.tensor([[0.0, 0, 8, 4]]), 6, 10)
    expected = torch.zeros(6, 10, dtype=torch.bool)
    expected[0:4, 0:4] = True
    assert torch.equal(out[0], expected)
    # threshold is >= (0.5 itself is in) and several masks at once
    out = paste_masks(torch.full((3, 1, 28, 28), 0.5), torch.tensor([[0.0, 0, 4, 4]] * 3), 5, 5, threshold=0.5)
    assert out[:, :4, :4].all() and not out[:, 4, :].any()
    assert paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), 5, 5).shape == (0, 5, 5)
    with pytest.raises(ValueError):
        paste_masks(torch.zeros(2, 1, 28, 28), torch.zeros(3, 4), 5, 5)


def test_rescale_detections_to_original_size():
    r = {"boxes": torch.tensor([[10.0, 10, 50, 30], [90.0, 90, 95, 95], [100.0, 0, 120, 10]]),
         "scores": torch.tensor([0.9, 0.8, 0.7])}
    out = rescale_detections(r, (100, 100), (200, 50))  # y x2, x x0.5
    assert out["boxes"].tolist() == [[5.0, 20, 25, 60], [45.0, 180, 47.5, 190]]  # third is empty after clipping
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8])


def test_mask_head_from_config_reads_loss_weight_and_scales_the_loss():
    cfg = load_config("config/models/Synthetic/semseg_tiny.yaml",
                      overrides=["MODEL.DEVICE", "cpu", "MODEL.ROI_MASK_HEAD.LOSS_WEIGHT", "2.5"])
    head = ModulatedMaskHead.from_config(cfg, in_channels=4)
    assert head.loss_weight == 2.5
    logits = torch.zeros(1, 1, 4, 4)  # sigmoid 0.5 everywhere: BCE = ln 2 per pixel
    gt = torch.ones(1, 8, 8, dtype=torch.uint8)
    loss = head.loss(logits, [torch.tensor([[0.0, 0, 8, 8]])], [gt])["loss_mask"]
    assert loss.item() == pytest.approx(2.5 * torch.log(torch.tensor(2.0)).item(), rel=1e-6)
