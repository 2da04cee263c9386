"""The shipped default model does what the product promises on scenes it has never seen: known shapes found with
their class, shapes of never-seen families flagged unknown, and the unknown decision lowering the open-set error."""
import os

import numpy as np
import pytest
from PIL import Image

from semseg_core import Predictor
from semseg_core.data.synthetic import generate_dataset
from semseg_core.evaluation import OpenSetEvaluator, results_to_coco, unknown_decision_disabled
from semseg_core.evaluation.coco_io import read_json


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("unseen_scenes"))
    json_file = generate_dataset(root, num_images=12, seed=99, openness=0.5, split="test", progress=False)
    return json_file, os.path.join(root, "images")


def _evaluate(predictor, json_file, image_root, force_known=False):
    gt = read_json(json_file, "ground truth")
    names = {c["name"]: c["id"] for c in gt["categories"]}
    known_ids = [names[n] for n in predictor.class_names]
    results = []
    for img in gt["images"]:
        rgb = np.array(Image.open(os.path.join(image_root, img["file_name"])).convert("RGB"))
        if force_known:
            with unknown_decision_disabled(predictor.model):
                result = predictor(rgb)
        else:
            result = predictor(rgb)
        results += results_to_coco(img["id"], result, known_ids)
    return OpenSetEvaluator(json_file, known_ids, iou_types=("segm",)).evaluate(results)["segm"]


def test_embedded_model_names_knowns_and_flags_unseen_shapes(scenes):
    json_file, image_root = scenes
    predictor = Predictor(device="cpu")
    assert predictor.class_names == ["box", "disc", "triangle", "ring", "star", "cross"]
    metrics = _evaluate(predictor, json_file, image_root)
    assert metrics["num_unknown_gt"] > 0 and metrics["num_known_gt"] > 0
    assert metrics["AP_k"] > 40, metrics          # held-out set of 200 images: 59.1
    assert metrics["AR_unk@10"] > 25, metrics     # held-out: 48.6
    ablation = _evaluate(predictor, json_file, image_root, force_known=True)
    assert ablation["AR_unk@10"] == 0
    assert metrics["AOSE"] < 0.75 * ablation["AOSE"], (metrics["AOSE"], ablation["AOSE"])
