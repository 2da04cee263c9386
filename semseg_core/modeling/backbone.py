"""ResNet trunk + FPN (P2-P6), with detectron2 numerics for the faithful R50 and a torchvision option.

Parameter names follow torchvision (`body.conv1`, `body.layer1.0.downsample.0`, `fpn.inner_blocks.0.0`,
`fpn.layer_blocks.0.0`) so torchvision and detectron2 weights both map onto them by renaming only.

- "resnet50_msra": the caffe/MSRA convention of detectron2's R-50 (BGR input, std 1, stride 2 in the 1x1
  `conv1` of each stage's first block, FrozenBN eps 1e-5). This is what the authors' checkpoints expect.
- "resnet18_torchvision" / "resnet50_torchvision": torchvision's ResNet (stride in the 3x3 `conv2`), for the
  tiny CPU model trained from scratch (no pretrained weights are available offline).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18, resnet50
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

# name -> (torchvision constructor, stride in the 1x1 conv (MSRA) rather than the 3x3 conv, C2-C5 channels)
BACKBONES: Dict[str, tuple] = {
    "resnet50_msra": (resnet50, True, [256, 512, 1024, 2048]),
    "resnet18_torchvision": (resnet18, False, [64, 128, 256, 512]),
    "resnet50_torchvision": (resnet50, False, [256, 512, 1024, 2048]),
}
NORMS = ("FrozenBN", "BN", "GN")
LEVEL_NAMES = ("p2", "p3", "p4", "p5", "p6")
LEVEL_STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


class D2FrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d (same buffers and state-dict names) computing as detectron2's does.

    detectron2's FrozenBatchNorm2d runs `F.batch_norm(x, running_mean, running_var, weight, bias, training=False,
    eps)`: one fused op whose float rounding differs from torchvision's `x * scale + shift` arithmetic (same math);
    the authors' features are reproduced bit for bit only with the former.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False,
                            eps=self.eps)


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "FrozenBN":
        return lambda channels: D2FrozenBatchNorm2d(channels, eps=1e-5)
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "GN":
        return lambda channels: nn.GroupNorm(32, channels)
    raise ValueError(f"MODEL.RESNETS.NORM must be one of {NORMS}, got {norm!r}")


def _move_stride_to_1x1(trunk: nn.Module) -> None:
    """MSRA/caffe bottlenecks downsample in conv1 (1x1), torchvision's (v1.5) in conv2 (3x3)."""
    for layer in (trunk.layer2, trunk.layer3, trunk.layer4):
        block = layer[0]
        block.conv1.stride = block.conv2.stride
        block.conv2.stride = (1, 1)


def _to_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace trainable BatchNorm2d in `module` by a frozen one with the same statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = D2FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replaced = _to_frozen_bn(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


class ResNetTrunk(nn.Module):
    """ResNet without avgpool/fc; returns C2-C5 (strides 4-32). Names: conv1, bn1, layer1..4."""

    def __init__(self, name: str, norm: str, freeze_at: int):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"MODEL.BACKBONE.NAME must be one of {sorted(BACKBONES)}, got {name!r}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in 0..5, got {freeze_at}")
        constructor, stride_in_1x1, channels = BACKBONES[name]
        self.out_channels_list: List[int] = list(channels)
        trunk = constructor(weights=None, norm_layer=_norm_layer(norm))
        if stride_in_1x1:
            _move_stride_to_1x1(trunk)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.layer4 = trunk.layer4
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        # detectron2: 1 = stem, 2 = stem + res2, ...; frozen stages also stop updating norm statistics.
        stages = [nn.ModuleList([self.conv1, self.bn1])] + [getattr(self, f"layer{i}") for i in range(1, 5)]
        for stage in stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)
        if freeze_at >= 1:
            self.bn1 = _to_frozen_bn(self.bn1)
        for i in range(1, freeze_at):
            _to_frozen_bn(getattr(self, f"layer{i}"))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


class ResNetFPNBackbone(nn.Module):
    """Normalised image batch (N, 3, H, W), H and W multiples of 32 -> OrderedDict p2..p6.

    FPN: 1x1 lateral + nearest 2x top-down sum + 3x3 output conv, no norm; P6 = max-pool(P5, k=1, s=2).
    """

    size_divisibility = 32

    def __init__(self, name: str = "resnet50_msra", out_channels: int = 256, norm: str = "FrozenBN",
                 freeze_at: int = 2):
        super().__init__()
        self.body = ResNetTrunk(name, norm, freeze_at)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels_list, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = dict(LEVEL_STRIDES)

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        h, w = images.shape[-2:]
        if h % self.size_divisibility or w % self.size_divisibility:
            raise ValueError(f"backbone input size {h}x{w} must be a multiple of {self.size_divisibility} "
                             "(pad the batch first)")
        features = self.body(images)
        pyramid = self.fpn(OrderedDict((f"c{i + 2}", f) for i, f in enumerate(features)))
        return OrderedDict(zip(LEVEL_NAMES, pyramid.values()))


def build_backbone(cfg) -> ResNetFPNBackbone:
    """Backbone from MODEL.BACKBONE.NAME / FREEZE_AT, MODEL.RESNETS.NORM and MODEL.FPN.OUT_CHANNELS."""
    return ResNetFPNBackbone(
        name=cfg.MODEL.BACKBONE.NAME,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.RESNETS.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
