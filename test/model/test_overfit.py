"""A tiny SemSeg learns a handful of synthetic images end to end (all parts training together)."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from semseg_core.config import load_config
from semseg_core.constants import UNKNOWN_ID
from semseg_core.modeling import build_model
from semseg_core.modeling.postprocess import paste_masks

S = 128
COLOURS = {"square": (220, 40, 40), "disc": (40, 200, 40), "triangle": (60, 60, 230)}
CLASSES = {"square": 0, "disc": 1}  # the triangle family is held back: never in training


def draw(objects, seed):
    rng = np.random.default_rng(seed)
    img = (40 + rng.integers(0, 12, size=(S, S, 3))).astype(np.uint8)
    yy, xx = np.mgrid[:S, :S]
    boxes, classes, masks = [], [], []
    for kind, cx, cy, r in objects:
        if kind == "square":
            m = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
        elif kind == "disc":
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:
            m = (yy <= cy + r) & (yy >= cy - r) & (abs(xx - cx) <= (yy - (cy - r)) / 2)
        img[m] = COLOURS[kind]
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        classes.append(CLASSES.get(kind, -1))
        masks.append(m)
    return {"image": torch.from_numpy(img).permute(2, 0, 1).contiguous(), "height": S, "width": S,
            "instances": {"boxes": torch.tensor(boxes, dtype=torch.float32), "classes": torch.tensor(classes),
                          "masks": torch.from_numpy(np.array(masks, dtype=np.uint8))}}


TRAIN = [
    [("square", 35, 35, 18), ("disc", 90, 85, 20)],
    [("disc", 40, 90, 16), ("square", 92, 38, 22)],
    [("square", 64, 64, 26)],
    [("disc", 64, 40, 22), ("square", 40, 100, 14), ("disc", 100, 100, 14)],
]
TEST = [("square", 35, 35, 18), ("disc", 92, 40, 18), ("triangle", 64, 95, 20)]


@pytest.mark.slow
def test_tiny_semseg_overfits_and_claims_no_confident_known_on_held_back_shape():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config("config/models/Synthetic/semseg_tiny.yaml", overrides=[
        "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_KNOWN_CLASSES", "2",
        "MODEL.RESNETS.NORM", "GN",  # BN running statistics lag behind at batch 2 in a few hundred steps
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
        "MODEL.DML.EMD_DIM", "32", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_MASK_HEAD.MASK_EMB_DIM", "16",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        # the authors' embedding settings: the tiny YAML's are tuned for its own schedule and shipped model
        "MODEL.DML.LOSS_WEIGHT", "2.0", "MODEL.DML.UNK_THR", "0.085"])
    model = build_model(cfg)
    train = [draw(layout, seed) for seed, layout in enumerate(TRAIN)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    first = None
    for it in range(300):
        for group in opt.param_groups:
            group["lr"] = 0.01 * min(1.0, (it + 1) / 30)
        losses = model([train[(2 * it) % 4], train[(2 * it + 1) % 4]])
        assert set(losses) == {"loss_rpn_loc", "loss_rpn_ctr", "loss_box_reg", "loss_iou", "loss_dml",
                               "loss_cls", "loss_mask"}
        total = sum(losses.values())
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
    assert total.item() < 0.5 * first

    model.eval()
    test = draw(TEST, 99)
    with torch.no_grad():
        outputs = model([train[0], test])
    for inp, out in zip([train[0], test], outputs):
        gt = inp["instances"]
        known = out["classes"] != UNKNOWN_ID
        iou = box_iou(gt["boxes"], out["boxes"])
        pasted = paste_masks(out["mask_probs"], out["boxes"], S, S)
        for g, cls in enumerate(gt["classes"].tolist()):
            if cls < 0:
                continue
            # each known object: a known detection of its class, confident, well placed, with a good mask
            hits = torch.nonzero(known & (out["classes"] == cls) & (iou[g] >= 0.5) & (out["scores"] >= 0.5))[:, 0]
            assert len(hits) > 0, f"known object {g} (class {cls}) not found: {out['classes'].tolist()}"
            best = hits[out["scores"][hits].argmax()]
            gm = gt["masks"][g].bool()
            mask_iou = (pasted[best] & gm).sum().item() / (pasted[best] | gm).sum().item()
            assert mask_iou >= 0.6
    # the held-back triangle is never claimed by a confident known-class detection (whether it is detected as
    # unknown is not checked: a few hundred steps on four images do not teach the unknown decision reliably)
    out = outputs[1]
    tri = box_iou(test["instances"]["boxes"][2:3], out["boxes"])[0] >= 0.5
    assert not (tri & (out["classes"] != UNKNOWN_ID) & (out["scores"] >= 0.5)).any()
    # unknowns come first, known-class ids are 0..K-1
    is_unknown = out["classes"] == UNKNOWN_ID
    assert not (is_unknown[1:] & ~is_unknown[:-1]).any()
    assert ((out["classes"][~is_unknown] >= 0) & (out["classes"][~is_unknown] < 2)).all()
