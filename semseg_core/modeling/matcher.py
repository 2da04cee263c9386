"""detectron2's `Matcher` semantics and balanced label subsampling.

Matcher: each prediction (column of an M x N quality matrix, M = ground truth) gets the index of
its best ground truth and a label from interval thresholds, e.g. thresholds [0.3, 0.7] with labels
[0, -1, 1]: IoU < 0.3 -> 0 (negative), [0.3, 0.7) -> -1 (ignored), >= 0.7 -> 1 (positive).
With `allow_low_quality_matches`, every prediction that ties for the highest IoU of some ground truth
becomes positive, even when that IoU is below the positive threshold (even 0, as in detectron2).
"""
from typing import Sequence, Tuple

import torch


class Matcher:
    """Best ground truth and interval label for every prediction (see the module docstring)."""

    def __init__(self, *, thresholds: Sequence[float], labels: Sequence[int],
                 allow_low_quality_matches: bool = False):
        """
        Args:
            thresholds: ascending IoU band limits.
            labels: one label (-1 ignore, 0 negative, 1 positive) per band: len(thresholds) + 1.
            allow_low_quality_matches: also make positive the best prediction(s) of every ground truth.
        """
        thresholds = list(thresholds)
        labels = list(labels)
        if any(t0 > t1 for t0, t1 in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be sorted ascending, got {thresholds}")
        if len(labels) != len(thresholds) + 1:
            raise ValueError(f"Matcher needs len(labels) == len(thresholds) + 1, got {labels} for {thresholds}")
        if any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher labels must be -1, 0 or 1, got {labels}")
        self.thresholds = [-float("inf")] + thresholds + [float("inf")]
        self.labels = labels
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """M x N matrix -> (matches N int64 index into the M ground truths, match_labels N int8)."""
        if match_quality_matrix.dim() != 2:
            raise ValueError("match_quality_matrix must be 2-D (ground truths x predictions)")
        num_preds = match_quality_matrix.shape[1]
        device = match_quality_matrix.device
        if match_quality_matrix.shape[0] == 0:
            # No ground truth: everything is matched to index 0 with the lowest label (background).
            matches = torch.zeros(num_preds, dtype=torch.int64, device=device)
            match_labels = torch.full((num_preds,), self.labels[0], dtype=torch.int8, device=device)
            return matches, match_labels
        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = torch.ones(num_preds, dtype=torch.int8, device=device)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            in_band = (matched_vals >= low) & (matched_vals < high)
            match_labels[in_band] = label
        if self.allow_low_quality_matches:
            highest_per_gt, _ = match_quality_matrix.max(dim=1)
            _, pred_idx = torch.nonzero(match_quality_matrix == highest_per_gt[:, None], as_tuple=True)
            match_labels[pred_idx] = 1
        return matches, match_labels


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random balanced sample: up to num_samples * positive_fraction positives (label not -1 and not
    bg_label), the rest filled with negatives (label == bg_label). Returns (pos_idx, neg_idx)."""
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm_pos = torch.randperm(positive.numel(), device=labels.device)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=labels.device)[:num_neg]
    return positive[perm_pos], negative[perm_neg]


def sample_binary_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float) -> torch.Tensor:
    """RPN-style: keep a balanced random subset of 1/0 labels, set all others to -1 (ignored)."""
    pos_idx, neg_idx = subsample_labels(labels, num_samples, positive_fraction, 0)
    out = torch.full_like(labels, -1)
    out[pos_idx] = 1
    out[neg_idx] = 0
    return out

