"""semseg_core.postprocess: the options, the raw output's re-decision and the instance map, on hand-made model
outputs whose expected instances are worked out in each test (masks of probability 1 fill their boxes)."""
import numpy as np
import pytest
import torch

from semseg_core.constants import UNKNOWN_ID
from semseg_core.postprocess import (ModelRules, PostprocessError, PostprocessOptions, mask_iou_matrix,
                                     postprocess, visible_boxes)

RULES = ModelRules(unknown_threshold=0.05)
FULL = torch.ones(1, 28, 28)


def _output(rows):
    """rows: (box, score, class, distance, objectness, class probabilities) -> a model output dict."""
    return {"boxes": torch.tensor([r[0] for r in rows], dtype=torch.float32),
            "scores": torch.tensor([r[1] for r in rows]),
            "classes": torch.tensor([r[2] for r in rows], dtype=torch.int64),
            "unknown_scores": torch.tensor([r[3] for r in rows]),
            "objectness": torch.tensor([r[4] for r in rows]),
            "class_probs": torch.tensor([r[5] for r in rows]),
            "mask_probs": torch.stack([FULL] * len(rows))}


def test_options_are_validated_and_name_the_field():
    assert PostprocessOptions().output == "raw"  # the authors' output is the library default
    with pytest.raises(PostprocessError, match="output must be one of raw, instance_map"):
        PostprocessOptions(output="panoptic")
    with pytest.raises(PostprocessError, match=r"known_score_threshold = 1.5 is outside \[0.0, 1.0\]"):
        PostprocessOptions(known_score_threshold=1.5)
    with pytest.raises(PostprocessError, match="unknown_distance_threshold must be -1"):
        PostprocessOptions(unknown_distance_threshold=-0.5)
    with pytest.raises(PostprocessError, match="max_detections must be an integer"):
        PostprocessOptions(max_detections=2.5)
    with pytest.raises(PostprocessError, match="duplicate_iou must be a number"):
        PostprocessOptions(duplicate_iou="0.5")
    snapshot = {name: getattr(PostprocessOptions(), name) for name in PostprocessOptions.field_names()}
    snapshot.update(output="instance_map", device="cpu")  # other keys of a parameter snapshot are ignored
    assert PostprocessOptions.from_mapping(snapshot).output == "instance_map"
    del snapshot["min_visible_fraction"]
    with pytest.raises(PostprocessError, match="missing min_visible_fraction"):
        PostprocessOptions.from_mapping(snapshot)


# One object seen by three detections (a known class-0 one, a known class-1 one on the same ROI, an unknown one
# with a slightly shifted box) and a second object seen as unknown only.
ROWS = [
    # box                    score  class        dist  obj   probs (3 known classes)
    ([10.0, 10, 50, 40],     0.90, UNKNOWN_ID,   0.30, 0.90, [0.05, 0.10, 0.02]),   # 0: object B, unknown
    ([60.0, 10, 100, 40],    0.80, UNKNOWN_ID,   0.08, 0.80, [0.97, 0.01, 0.01]),   # 1: object A, unknown
    ([61.0, 10, 101, 40],    0.70, 0,            0.03, 0.60, [0.70, 0.20, 0.05]),   # 2: object A, class 0
    ([61.0, 10, 101, 40],    0.20, 1,            0.03, 0.60, [0.70, 0.20, 0.05]),   # 3: same ROI, class 1
]


def test_raw_output_is_the_model_output_filtered_and_sorted():
    out = _output(ROWS)
    raw = postprocess(out, 60, 120, PostprocessOptions(known_score_threshold=0.3, unknown_score_threshold=0.3),
                      RULES)
    assert raw.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])  # row 3 (0.2) is below the known threshold
    assert raw.classes.tolist() == [UNKNOWN_ID, UNKNOWN_ID, 0]
    # the label image: where rows 1 and 2 overlap (x 61..99) the higher score (row 1, id 2) wins; row 2 keeps x=100
    assert raw.label_image[20, 80] == 2 and raw.label_image[20, 100] == 3 and raw.label_image[20, 20] == 1
    assert postprocess(out, 60, 120, PostprocessOptions(max_detections=2), RULES).scores.tolist() == \
        pytest.approx([0.9, 0.8])


def test_raw_redecision_works_both_ways():
    out = _output(ROWS)
    own = postprocess(out, 60, 120, PostprocessOptions(), RULES)
    same = postprocess(out, 60, 120, PostprocessOptions(unknown_distance_threshold=0.05), RULES)
    assert same.classes.tolist() == own.classes.tolist() and same.scores.tolist() == own.scores.tolist()
    # tighter (0.02): rows 2 and 3 (distance 0.03) become unknown with their objectness 0.6; one ROI twice, so the
    # model's unknown NMS keeps one; row 1 (IoU 0.95 with them, objectness 0.8) suppresses it too
    tight = postprocess(out, 60, 120, PostprocessOptions(unknown_distance_threshold=0.02), RULES)
    assert tight.classes.tolist() == [UNKNOWN_ID, UNKNOWN_ID] and tight.scores.tolist() == pytest.approx([0.9, 0.8])
    # looser (0.1): row 1 (distance 0.08) becomes its most probable class 0 at 0.97, and the class-0 NMS removes
    # row 2 (same object, 0.7); row 3 (class 1) stays
    loose = postprocess(out, 60, 120, PostprocessOptions(unknown_distance_threshold=0.1), RULES)
    assert loose.classes.tolist() == [0, UNKNOWN_ID, 1]
    assert loose.scores.tolist() == pytest.approx([0.97, 0.9, 0.2])
    # back to the model's own decision: the original output again (nothing was changed in place)
    again = postprocess(out, 60, 120, PostprocessOptions(unknown_distance_threshold=-1.0), RULES)
    assert again.classes.tolist() == own.classes.tolist() and again.scores.tolist() == own.scores.tolist()


def test_instance_map_one_instance_per_object_with_the_strongest_class_evidence():
    out = _output(ROWS)
    imap = postprocess(out, 60, 120, PostprocessOptions(output="instance_map"), RULES)
    # object A: rows 1, 2, 3 (mask IoU 39/41 > 0.5) ranked by objectness: row 1 leads; the best class evidence
    # among them is row 1's own class-0 probability 0.97 >= 0.95 -> class 0 with confidence 0.97.
    # object B: row 0 alone, best probability 0.10 -> unknown with its objectness 0.9.
    assert imap.classes.tolist() == [0, UNKNOWN_ID]
    assert imap.scores.tolist() == pytest.approx([0.97, 0.9])
    assert imap.unknown_scores.tolist() == pytest.approx([0.08, 0.30])  # the leading detection's distance
    # boxes are the visible masks' (pixel centres inside the box: x 60..99, y 10..39 -> [60, 10, 100, 40])
    assert imap.boxes.tolist() == [[60.0, 10.0, 100.0, 40.0], [10.0, 10.0, 50.0, 40.0]]
    assert set(torch.unique(imap.label_image).tolist()) == {0, 1, 2}
    assert (imap.masks.sum(dim=0) <= 1).all()  # no pixel in two instances
    for k in range(2):
        assert torch.equal(imap.masks[k], imap.label_image == k + 1)
    # a stricter probability: object A's evidence (0.97) no longer suffices -> unknown, scored by objectness 0.8
    strict = postprocess(out, 60, 120, PostprocessOptions(output="instance_map", known_min_probability=0.98), RULES)
    assert strict.classes.tolist() == [UNKNOWN_ID, UNKNOWN_ID] and strict.scores.tolist() == pytest.approx([0.9, 0.8])
    # the distance as a veto: row 1 (distance 0.08) gives the evidence; 0.05 vetoes it, 0.1 does not
    veto = postprocess(out, 60, 120, PostprocessOptions(output="instance_map", unknown_distance_threshold=0.05),
                       RULES)
    assert veto.classes.tolist() == [UNKNOWN_ID, UNKNOWN_ID]
    allowed = postprocess(out, 60, 120, PostprocessOptions(output="instance_map", unknown_distance_threshold=0.1),
                          RULES)
    assert allowed.classes.tolist() == [0, UNKNOWN_ID]


def test_instance_map_drops_instances_hidden_by_higher_ranked_ones():
    rows = [([0.0, 0, 40, 40], 0.9, UNKNOWN_ID, 0.3, 0.9, [0.1, 0.1, 0.1]),   # 1600 px, ranked first
            ([30.0, 0, 50, 40], 0.8, UNKNOWN_ID, 0.3, 0.8, [0.1, 0.1, 0.1]),  # 800 px, 400 visible: IoU 400/2000
            ([20.0, 0, 50, 40], 0.7, UNKNOWN_ID, 0.3, 0.7, [0.1, 0.1, 0.1])]  # 1200 px, 0 visible after both
    out = _output(rows)
    # the third overlaps the first at IoU 800/2000 = 0.4 and the second at 800/1200 = 0.67 > 0.5: a duplicate;
    # the second keeps 400 of 800 px = 0.5 of its mask: kept at min_visible_fraction 0.5, dropped at 0.6
    kept = postprocess(out, 40, 60, PostprocessOptions(output="instance_map"), RULES)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8])
    assert kept.boxes.tolist() == [[0.0, 0.0, 40.0, 40.0], [40.0, 0.0, 50.0, 40.0]]  # the visible part
    dropped = postprocess(out, 40, 60, PostprocessOptions(output="instance_map", min_visible_fraction=0.6), RULES)
    assert dropped.scores.tolist() == pytest.approx([0.9])
    # a stricter duplicate IoU lets the third one through as an object of its own... with nothing visible: dropped
    loose = postprocess(out, 40, 60, PostprocessOptions(output="instance_map", duplicate_iou=0.7), RULES)
    assert loose.scores.tolist() == pytest.approx([0.9, 0.8])
    capped = postprocess(out, 40, 60, PostprocessOptions(output="instance_map", max_detections=1), RULES)
    assert capped.scores.tolist() == pytest.approx([0.9])
    thresholded = postprocess(out, 40, 60, PostprocessOptions(output="instance_map", unknown_score_threshold=0.85),
                              RULES)
    assert thresholded.scores.tolist() == pytest.approx([0.9])


def test_instance_map_of_nothing_and_outputs_without_the_needed_fields():
    out = _output(ROWS)
    empty = {k: v[:0] for k, v in out.items()}
    none = postprocess(empty, 30, 40, PostprocessOptions(output="instance_map"), RULES)
    assert len(none.scores) == 0 and none.label_image.shape == (30, 40) and not none.label_image.any()
    del out["class_probs"]
    with pytest.raises(PostprocessError, match="lacks class_probs"):
        postprocess(out, 60, 120, PostprocessOptions(output="instance_map"), RULES)
    with pytest.raises(PostprocessError, match="lacks class_probs"):
        postprocess(out, 60, 120, PostprocessOptions(unknown_distance_threshold=0.2), RULES)


def test_mask_iou_and_visible_boxes_by_hand():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 0:2, 0:4] = True  # 8 px
    masks[1, 1:3, 2:6] = True  # 8 px, 2 shared with mask 0
    iou = mask_iou_matrix(masks)
    assert iou[0, 1].item() == pytest.approx(2 / 14) and iou[0, 0].item() == 1.0 and iou[2, 2].item() == 0.0
    assert visible_boxes(masks).tolist() == [[0, 0, 4, 2], [2, 1, 6, 3], [0, 0, 0, 0]]


def test_instance_map_on_the_embedded_model_keeps_its_promises(tmp_path):
    """On a synthetic scene: every instance owns pixels, ids are 1..N in confidence order, boxes are the visible
    masks' boxes; the raw output of the same frame lists more detections than there are objects."""
    import cv2

    from semseg_core import Predictor
    from semseg_core.data.synthetic import generate_dataset

    generate_dataset(str(tmp_path), 1, seed=2024, split="test", progress=False)
    image = cv2.imread(str(tmp_path / "images" / "000001.png"))[:, :, ::-1].copy()
    predictor = Predictor()
    r = predictor(image, options=PostprocessOptions(output="instance_map"))
    raw = predictor(image)
    assert 0 < len(r) < len(raw)
    assert np.all(np.diff(r.scores) <= 0)
    ids = np.unique(r.label_image)
    assert ids[ids > 0].tolist() == list(range(1, len(r) + 1))
    for k in range(len(r)):
        assert np.array_equal(r.masks[k], r.label_image == k + 1)
        ys, xs = np.nonzero(r.masks[k])
        assert r.boxes[k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
