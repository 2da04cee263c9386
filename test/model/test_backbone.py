"""Backbone + FPN: output levels and shapes, the MSRA stride convention, freezing, parameter names."""
import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import FrozenBatchNorm2d

from semseg_core.config import get_cfg
from semseg_core.modeling.backbone import D2FrozenBatchNorm2d, ResNetFPNBackbone, build_backbone

torch.set_num_threads(1)


def _r50_cfg():
    cfg = get_cfg()  # defaults = the faithful R50 (resnet50_msra, FrozenBN, FREEZE_AT 2, 256 channels)
    return cfg


def test_r50_msra_levels_shapes_and_stride_in_1x1():
    backbone = build_backbone(_r50_cfg()).eval()
    assert backbone.out_channels == 256 and backbone.size_divisibility == 32
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 192))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for name, stride in zip(out, (4, 8, 16, 32, 64)):
        assert out[name].shape == (1, 256, 128 // stride, 192 // stride), name
    body = backbone.body
    for layer in (body.layer2, body.layer3, body.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)
    assert body.layer1[0].conv1.stride == (1, 1) and body.layer1[0].downsample[0].stride == (1, 1)


def test_r50_msra_norms_frozen_and_stem_res2_frozen():
    backbone = build_backbone(_r50_cfg())
    norms = [m for m in backbone.body.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    assert len(norms) == 53 and all(isinstance(m, FrozenBatchNorm2d) and m.eps == 1e-5 for m in norms)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("body.conv1", "body.layer1.")) for n in trainable)
    assert "body.layer2.0.conv1.weight" in trainable and "fpn.inner_blocks.0.0.weight" in trainable
    # 53 convs in the trunk (no bias), FPN 4 lateral + 4 output convs with bias
    trunk_params = [n for n, _ in backbone.body.named_parameters()]
    assert len(trunk_params) == 53
    fpn_keys = {k for k in backbone.state_dict() if k.startswith("fpn.")}
    assert fpn_keys == {f"fpn.{kind}.{i}.0.{p}" for kind in ("inner_blocks", "layer_blocks")
                        for i in range(4) for p in ("weight", "bias")}


def test_fpn_is_nearest_upsample_sum_and_p6_is_maxpool():
    backbone = ResNetFPNBackbone("resnet18_torchvision", out_channels=8, norm="BN", freeze_at=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = backbone(x)
        c2, c3, c4, c5 = backbone.body(x)
        fpn = backbone.fpn
        inner5 = fpn.inner_blocks[3](c5)
        inner4 = fpn.inner_blocks[2](c4) + inner5.repeat_interleave(2, -2).repeat_interleave(2, -1)
        p4 = fpn.layer_blocks[2](inner4)
        p5 = fpn.layer_blocks[3](inner5)
    torch.testing.assert_close(out["p4"], p4)
    torch.testing.assert_close(out["p5"], p5)
    torch.testing.assert_close(out["p6"], p5[..., ::2, ::2])


def test_torchvision_convention_and_tiny_config():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "resnet18_torchvision", "MODEL.RESNETS.NORM", "BN",
                         "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.FPN.OUT_CHANNELS", "64"])
    backbone = build_backbone(cfg)
    assert backbone.body.layer2[0].conv1.stride == (2, 2)  # BasicBlock: stride in its first 3x3 conv
    assert all(p.requires_grad for p in backbone.parameters())
    backbone.train()
    out = backbone(torch.randn(2, 3, 96, 64))
    assert [tuple(v.shape) for v in out.values()] == [(2, 64, 24, 16), (2, 64, 12, 8), (2, 64, 6, 4),
                                                      (2, 64, 3, 2), (2, 64, 2, 1)]
    sum(v.sum() for v in out.values()).backward()
    assert backbone.body.conv1.weight.grad is not None


def test_freeze_at_with_trainable_bn_converts_frozen_stages():
    backbone = ResNetFPNBackbone("resnet50_torchvision", out_channels=16, norm="BN", freeze_at=2)
    assert isinstance(backbone.body.bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.body.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.body.layer2[0].bn1, torch.nn.BatchNorm2d)
    assert backbone.body.layer2[0].conv2.stride == (2, 2)  # torchvision v1.5: stride in the 3x3


def test_bad_names_and_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME"):
        ResNetFPNBackbone("resnet101_msra")
    with pytest.raises(ValueError, match="MODEL.RESNETS.NORM"):
        ResNetFPNBackbone("resnet18_torchvision", norm="SyncBN")
    backbone = ResNetFPNBackbone("resnet18_torchvision", out_channels=8, norm="BN", freeze_at=0).eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        backbone(torch.randn(1, 3, 50, 64))


def test_frozen_bn_computes_as_detectron2_with_f_batch_norm():
    g = torch.Generator().manual_seed(0)
    bn = D2FrozenBatchNorm2d(64, eps=1e-5)
    for name in ("weight", "bias", "running_mean"):
        getattr(bn, name).copy_(torch.randn(64, generator=g))
    bn.running_var.copy_(torch.rand(64, generator=g) + 0.1)
    x = torch.randn(2, 64, 33, 47, generator=g) * 50
    # detectron2's FrozenBatchNorm2d.forward: one fused inference batch norm over the four buffers
    expected = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-5)
    assert torch.equal(bn(x), expected)
    assert torch.equal(bn(x.requires_grad_()), expected)  # the training path too (what newer detectron2 does)
    # same math as the scale/shift form, different rounding: equal only to float tolerance
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    torch.testing.assert_close(bn(x), x * scale[:, None, None] + shift[:, None, None], rtol=1e-5, atol=1e-4)
    backbone = build_backbone(_r50_cfg())
    assert all(type(m) is D2FrozenBatchNorm2d for m in backbone.body.modules() if isinstance(m, FrozenBatchNorm2d))
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}  # torchvision's names
