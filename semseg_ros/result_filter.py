"""Node-side thresholds applied on top of the model's own (they can only remove or relabel)."""
import dataclasses

import numpy as np

from semseg_core.constants import UNKNOWN_ID, UNKNOWN_NAME


def label_image_from_masks(masks, height, width):
    """uint16 label image, value k = instance k-1; the earlier (higher-scoring) instance wins overlaps."""
    label = np.zeros((height, width), np.uint16)
    for index in range(len(masks) - 1, -1, -1):
        label[np.asarray(masks[index], bool)] = index + 1
    return label


def filter_result(result, known_min_score, unknown_min_score, unknown_distance=-1.0):
    """A Result keeping instances above their score threshold.

    With ``unknown_distance`` >= 0, known instances whose ``unknown_scores`` (distance to the nearest
    prototype) exceed it become unknown first. Order (score descending) is preserved and the label
    image is rebuilt only when an instance is removed.
    """
    is_known = np.asarray(result.is_known, bool).copy()
    class_ids = np.asarray(result.class_ids).copy()
    class_names = list(result.class_names)
    relabel = is_known & (np.asarray(result.unknown_scores) > unknown_distance) \
        if unknown_distance >= 0 else np.zeros_like(is_known)
    for index in np.flatnonzero(relabel):
        is_known[index] = False
        class_ids[index] = UNKNOWN_ID
        class_names[index] = UNKNOWN_NAME
    scores = np.asarray(result.scores)
    keep = np.where(is_known, scores >= known_min_score, scores >= unknown_min_score)
    if keep.all() and not relabel.any():
        return result
    changes = dict(is_known=is_known[keep], class_ids=class_ids[keep],
                   class_names=[name for name, k in zip(class_names, keep) if k],
                   boxes=np.asarray(result.boxes)[keep], scores=scores[keep],
                   unknown_scores=np.asarray(result.unknown_scores)[keep])
    if not keep.all():
        if result.masks is None:
            raise ValueError("filter_result must remove instances and rebuild the label image, but the result has "
                             "no masks: call the Predictor with masks=True")
        masks = np.asarray(result.masks)[keep]
        height, width = np.asarray(result.label_image).shape
        changes["masks"] = masks
        changes["label_image"] = label_image_from_masks(masks, height, width)
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, **changes)
    fields = dict(vars(result))
    fields.update(changes)
    return type(result)(**fields)
