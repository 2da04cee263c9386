"""Class-semantics embedding with learnable prototypes (the authors' `DML` / PLN).

encoder: box feature f -> z (un-normalised, EMD_DIM); embedding e = z / |z| on the unit sphere;
decoder: z -> r (feeds the softmax classifier; no reconstruction loss).
prototypes: K*R x D parameter, N(0, 1) init, L2-normalised on use, learned by plain SGD.
Distance: cosine distance 1 - e.p (L1/L2 also available). Unknown iff min distance > unknown_threshold.
"""
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CfgNode


class PrototypeEmbedding(nn.Module):
    """Encoder/decoder around a unit-sphere embedding, learnable class prototypes, the unknown rule."""

    def __init__(self, *, in_dim: int, emd_dim: int, num_classes: int, reps_per_class: int = 1,
                 distance_type: str = "COS", alpha: float = 0.05, beta: float = 0.95,
                 iou_threshold: float = 0.5, loss_weight: float = 2.0, unknown_threshold: float = 0.085):
        """
        Args:
            in_dim: width of the box feature.
            emd_dim: embedding width D (MODEL.DML.EMD_DIM).
            num_classes: known classes K (MODEL.ROI_HEADS.NUM_KNOWN_CLASSES).
            reps_per_class: prototypes per class (MODEL.DML.REPS_PER_CLASS).
            distance_type: "COS", "L1" or "L2" (MODEL.DML.DISTANCE_TYPE).
            alpha: attraction margin of the double-margin loss (MODEL.DML.ALPHA).
            beta: repulsion margin (MODEL.DML.BETA).
            iou_threshold: an ROI trains the embedding only with IoU > this (MODEL.DML.IOU_THRESHOLD).
            loss_weight: weight of the embedding loss (MODEL.DML.LOSS_WEIGHT).
            unknown_threshold: unknown iff the nearest-prototype distance > this (MODEL.DML.UNK_THR).
        """
        super().__init__()
        if distance_type not in ("COS", "L1", "L2"):
            raise ValueError(f"MODEL.DML.DISTANCE_TYPE must be COS, L1 or L2, got {distance_type!r}")
        if num_classes < 1 or reps_per_class < 1:
            raise ValueError("the embedding needs at least one known class and one prototype per class")
        self.encoder = nn.Linear(in_dim, emd_dim)
        self.decoder = nn.Linear(emd_dim, in_dim)
        self.prototypes = nn.Parameter(torch.randn(num_classes * reps_per_class, emd_dim))
        for layer in (self.encoder, self.decoder):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)
        self.num_classes = num_classes
        self.reps_per_class = reps_per_class
        self.distance_type = distance_type
        self.alpha = alpha
        self.beta = beta
        self.iou_threshold = iou_threshold
        self.loss_weight = loss_weight
        # Plain attribute (not a buffer): evaluation may set it to float("inf") to disable "unknown".
        self.unknown_threshold = float(unknown_threshold)

    @classmethod
    def from_config(cls, cfg: CfgNode, in_dim: int) -> "PrototypeEmbedding":
        dml = cfg.MODEL.DML
        return cls(in_dim=in_dim, emd_dim=dml.EMD_DIM, num_classes=cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES,
                   reps_per_class=dml.REPS_PER_CLASS, distance_type=dml.DISTANCE_TYPE, alpha=dml.ALPHA,
                   beta=dml.BETA, iou_threshold=dml.IOU_THRESHOLD, loss_weight=dml.LOSS_WEIGHT,
                   unknown_threshold=dml.UNK_THR)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """f (R x in_dim) -> (unit embedding e R x D, decoder output r R x in_dim)."""
        z = self.encoder(features)
        return F.normalize(z, p=2, dim=1), self.decoder(z)

    def normalized_prototypes(self) -> torch.Tensor:
        return F.normalize(self.prototypes, p=2, dim=1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pairwise distances between rows of a (P x D) and b (Q x D) -> P x Q."""
        if self.distance_type == "COS":
            return 1.0 - a @ b.t()
        if self.distance_type == "L1":
            return torch.cdist(a, b, p=1)
        return torch.cdist(a, b, p=2)

    def class_distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """R x D -> R x K: distance to the nearest prototype of each class."""
        d = self.distance(embeddings, self.normalized_prototypes())
        return d.view(len(embeddings), self.num_classes, self.reps_per_class).min(dim=2).values

    def min_distance(self, embeddings: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (d_min R, nearest class R)."""
        return self.class_distances(embeddings).min(dim=1)

    def is_unknown(self, min_distances: torch.Tensor) -> torch.Tensor:
        """R nearest-prototype distances -> R bool."""
        return min_distances > self.unknown_threshold

    def loss(self, embeddings: torch.Tensor, gt_classes: torch.Tensor, ious: torch.Tensor,
             num_rois: int) -> Dict[str, torch.Tensor]:
        """Double-margin loss with prototype separation.

        Positives: ROIs of a known class (0..K-1) with IoU > iou_threshold (strict).
        attraction max(d(e, p_c) - alpha, 0), repulsion max(beta - min_{c' != c} d(e, p_c'), 0),
        separation per prototype max(alpha + beta - min_{j != i} d(p_i, p_j), 0);
        sum of all terms / num_rois (all sampled ROIs in the batch), times loss_weight.
        """
        pos = (gt_classes >= 0) & (gt_classes < self.num_classes) & (ious > self.iou_threshold)
        e = embeddings[pos]
        cls = gt_classes[pos]
        d = self.class_distances(e)  # P x K
        own = d.gather(1, cls[:, None])[:, 0]
        others = d.scatter(1, cls[:, None], float("inf"))
        attraction = F.relu(own - self.alpha).sum()
        repulsion = F.relu(self.beta - others.min(dim=1).values).sum() if self.num_classes > 1 else own.sum() * 0
        protos = self.normalized_prototypes()
        separation = protos.sum() * 0.0
        if len(protos) > 1:
            dp = self.distance(protos, protos)
            dp = dp + torch.diag(torch.full((len(protos),), float("inf"), device=dp.device, dtype=dp.dtype))
            separation = F.relu(self.alpha + self.beta - dp.min(dim=1).values).sum()
        total = (attraction + repulsion + separation) / max(1, num_rois)
        return {"loss_dml": total * self.loss_weight}
