"""SemSeg's COCO-style open-set evaluation (METHOD.md section 4) on top of pycocotools.

Three pycocotools ``COCOeval`` runs per IoU type share one relabelled GT (every non-known category becomes
UNKNOWN_ID):

* known:   params.catIds = known ids       -> AP_k, AP50/75, APs/m/l, AR_k@10..100, per-class AP
* unknown: params.catIds = [UNKNOWN_ID]    -> AP_unk, AR_unk@10/30/100 (top-k unknowns per image)
* cross:   COCOeval's own greedy matcher at IoU 0.5, area "all", maxDets 100, fed with regrouped GT:
           known detections of class c vs unknown GT (AOSE, WI), vs other known GT, and unknown
           detections vs known GT (K_det_as_UNK).

All matching and IoU is pycocotools' (``evaluateImg`` / ``maskUtils.iou``); crowd GT is ignored the COCO way.

Conventions (checked against the authors' evaluator, which agrees on every metric with the default settings):

* AOSE (``aose_classes="with_gt"``, the authors' count, default): a known class with no non-crowd ground truth in
  the whole test set is skipped before its open-set errors are counted (the authors count inside COCOeval's
  ``accumulate``, after its "no ground truth: skip the class" test), so its detections on unknown objects add
  nothing. ``aose_classes="all"`` (ours, an option) counts every known class; it can only be larger (a built case:
  40 vs the authors' 22). GraspNet test splits need not contain every known object, so the two can differ there.
* Annotation id 0 (ours): COCOeval stores the matched GT id and reads 0 as "no match", so with the authors'
  evaluator a detection matched to a GT whose id is 0 counts as a false positive. ``coco_io.load_coco_gt``
  renumbers the annotations 1..N when any id is 0, missing or repeated, so every match counts.
* WI with crowd regions (ours; Openset RCNN's COCO-style WI, which SemSeg dropped): crowd GT is ignored as in AP.
  A known detection matched to a crowd region (known or unknown) is ignored: neither TP, FP (so not in TP+FP)
  nor an open-set error; AOSE treats it the same way.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .coco_io import UNKNOWN_ID, CocoFormatError, check_results, load_coco_gt, load_results_json, segmentation_to_rle

MAX_DETS = [10, 20, 30, 50, 100]
AREA_LABELS = ["all", "small", "medium", "large"]
WI_RECALL = 0.8
OPEN_SET_IOU = 0.5
# Which known classes AOSE counts: "with_gt" = those with non-crowd ground truth in the test set (the authors'),
# "all" = every known class (ours).
AOSE_CLASS_RULES = ("with_gt", "all")


def _quiet():
    """pycocotools prints progress lines on every call; keep the terminal for our table."""
    return contextlib.redirect_stdout(io.StringIO())


def _mean_valid(values: np.ndarray) -> float:
    """COCO convention: -1 marks "no GT for this setting"; the mean skips them (NaN if nothing is left)."""
    valid = values[values > -1]
    return float(np.mean(valid)) * 100.0 if valid.size else float("nan")


def _make_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


class _RegroupedMatcher(COCOeval):
    """COCOeval whose per-(image, key) GT and detection lists are set by hand, then matched by evaluateImg."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, iou_type: str):
        super().__init__(coco_gt, coco_dt, iou_type)
        self.params.iouThrs = np.array([OPEN_SET_IOU])
        self.params.areaRng = [[0 ** 2, 1e5 ** 2]]
        self.params.areaRngLbl = ["all"]
        self.params.maxDets = [MAX_DETS[-1]]

    def match(self, image_id, key, gts: list, dts: list) -> set:
        """Ids of the detections (top maxDets by score) greedily matched one-to-one to a non-ignored GT."""
        if not gts or not dts:
            return set()
        self._gts[image_id, key] = gts
        self._dts[image_id, key] = dts
        self.ious[image_id, key] = self.computeIoU(image_id, key)
        e = self.evaluateImg(image_id, key, self.params.areaRng[0], self.params.maxDets[-1])
        matched = (e["dtMatches"][0] > 0) & (e["dtIgnore"][0] == 0)
        return {d for d, m in zip(e["dtIds"], matched) if m}


class OpenSetEvaluator:
    """SemSeg's open-set evaluator: AP_k, AOSE, AP_unk, AR_unk@10/30/100, WI for bbox and/or segm.

    ``gt``: path of a COCO json or a COCO dict (never modified). ``known_category_ids``: dataset category
    ids of the known classes; every other GT category is evaluated as unknown. Results use the dataset
    category id for known detections and ``UNKNOWN_ID`` (1000) for unknown ones.
    """

    def __init__(self, gt, known_category_ids: Iterable[int], iou_types: Sequence[str] = ("bbox", "segm"),
                 aose_classes: str = "with_gt"):
        if aose_classes not in AOSE_CLASS_RULES:
            raise ValueError(f"aose_classes must be one of {AOSE_CLASS_RULES}, got {aose_classes!r}")
        self.aose_classes = aose_classes
        dataset, self.gt_source = load_coco_gt(gt)
        iou_types = tuple(iou_types)
        if not iou_types or any(t not in ("bbox", "segm") for t in iou_types):
            raise ValueError(f"iou_types must be a non-empty subset of ('bbox', 'segm'), got {iou_types!r}")
        self.iou_types = iou_types
        categories = {c["id"]: c for c in dataset["categories"]}
        known = sorted({int(c) for c in known_category_ids})
        if not known:
            raise ValueError("known_category_ids is empty: at least one known class is needed")
        missing = [c for c in known if c not in categories]
        if missing:
            raise ValueError(f"known category ids {missing} are not categories of {self.gt_source}")
        if UNKNOWN_ID in known:
            raise ValueError(f"UNKNOWN_ID={UNKNOWN_ID} cannot be a known category id")
        self.known_category_ids = known
        names = [str(categories[c].get("name", c)) for c in known]
        # per-class results are keyed by name; a repeated name gets its id appended to stay distinct
        self.class_names = {c: n if names.count(n) == 1 else f"{n} (id {c})" for c, n in zip(known, names)}
        known_set = set(known)

        # Relabel on our own copies (the authors mutate the caller's GT in place).
        for ann in dataset["annotations"]:
            if ann["category_id"] not in known_set:
                ann["category_id"] = UNKNOWN_ID
        dataset["categories"] = [dict(categories[c]) for c in known] + [{"id": UNKNOWN_ID, "name": "unknown"}]
        self.images = {img["id"]: img for img in dataset["images"]}
        if "segm" in iou_types:
            self._convert_gt_masks(dataset["annotations"])
        self._dataset = dataset
        not_crowd = [a for a in dataset["annotations"] if not a["iscrowd"]]
        self.num_known_gt = sum(a["category_id"] != UNKNOWN_ID for a in not_crowd)
        self.classes_with_gt = {a["category_id"] for a in not_crowd} & known_set
        self.num_unknown_gt = sum(a["category_id"] == UNKNOWN_ID for a in not_crowd)
        self.pr_curves: dict = {}  # filled by evaluate(); read by plot_pr_curves()

    def _convert_gt_masks(self, annotations: list) -> None:
        """Polygons -> RLE once (not on every evaluate()), with an error naming the broken annotation."""
        for ann in annotations:
            img = self.images[ann["image_id"]]
            if not ann.get("segmentation"):
                raise CocoFormatError(f"{self.gt_source}: annotation id {ann['id']} has no 'segmentation' "
                                      f"(needed for segm evaluation; use iou_types=('bbox',), CLI --iou-types bbox)")
            try:
                ann["segmentation"] = segmentation_to_rle(ann["segmentation"], img["height"], img["width"])
            except Exception as e:
                raise CocoFormatError(f"{self.gt_source}: annotation id {ann['id']}: bad 'segmentation': {e}") from e

    # ------------------------------------------------------------------ public API
    def evaluate(self, coco_results: Sequence[dict], source: str = "<results>") -> dict:
        """Evaluate COCO result dicts; returns ``{iou_type: {metric: value}}`` (percentages 0-100, AOSE a count)."""
        allowed = set(self.known_category_ids) | {UNKNOWN_ID}
        dets = check_results(coco_results, self.images, allowed, source, self.iou_types)
        metrics = {}
        for iou_type in self.iou_types:
            metrics[iou_type] = self._evaluate_type(dets, iou_type)
        return metrics

    # ------------------------------------------------------------------ internals
    def _coco_pair(self, dets: list, iou_type: str) -> tuple[COCO, COCO]:
        gt = dict(self._dataset)
        gt["annotations"] = [dict(a) for a in self._dataset["annotations"]]  # COCOeval writes flags into them
        coco_gt = _make_coco(gt)
        if iou_type == "segm":
            # No bbox: loadRes then takes the area from the mask, as the authors' evaluator does.
            anns = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
        else:
            anns = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
        if anns:
            with _quiet():
                coco_dt = coco_gt.loadRes(anns)
        else:
            coco_dt = _make_coco({"images": list(gt["images"]), "categories": list(gt["categories"]),
                                  "annotations": []})
        return coco_gt, coco_dt

    def _run_cocoeval(self, coco_gt: COCO, coco_dt: COCO, iou_type: str, cat_ids: list) -> COCOeval:
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.catIds = list(cat_ids)
        ev.params.maxDets = list(MAX_DETS)
        with _quiet():
            ev.evaluate()
            ev.accumulate()
        return ev

    def _evaluate_type(self, dets: list, iou_type: str) -> dict:
        coco_gt, coco_dt = self._coco_pair(dets, iou_type)
        known_ev = self._run_cocoeval(coco_gt, coco_dt, iou_type, self.known_category_ids)
        unknown_ev = self._run_cocoeval(coco_gt, coco_dt, iou_type, [UNKNOWN_ID])
        out = self._known_stats(known_ev)
        out.update(self._unknown_stats(unknown_ev))
        out.update(self._open_set_errors(coco_gt, coco_dt, iou_type, known_ev))
        out["num_known_gt"] = self.num_known_gt
        out["num_unknown_gt"] = self.num_unknown_gt
        out["num_detections"] = len(dets)
        out["per_class_AP_k"] = self._per_class_ap(known_ev)
        self._store_pr_curves(iou_type, known_ev, unknown_ev)
        return out

    @staticmethod
    def _ap(ev: COCOeval, iou: float | None = None, area: str = "all", max_det: int = 100) -> float:
        p = ev.params
        s = ev.eval["precision"]
        if iou is not None:
            s = s[np.isclose(p.iouThrs, iou)]
        return _mean_valid(s[:, :, :, AREA_LABELS.index(area), MAX_DETS.index(max_det)])

    @staticmethod
    def _ar(ev: COCOeval, area: str = "all", max_det: int = 100) -> float:
        return _mean_valid(ev.eval["recall"][:, :, AREA_LABELS.index(area), MAX_DETS.index(max_det)])

    def _known_stats(self, ev: COCOeval) -> dict:
        out = {"AP_k": self._ap(ev), "AP50_k": self._ap(ev, 0.5), "AP75_k": self._ap(ev, 0.75),
               "APs_k": self._ap(ev, area="small"), "APm_k": self._ap(ev, area="medium"),
               "APl_k": self._ap(ev, area="large")}
        for m in MAX_DETS:
            out[f"AR_k@{m}"] = self._ar(ev, max_det=m)
        out.update({"ARs_k": self._ar(ev, "small"), "ARm_k": self._ar(ev, "medium"), "ARl_k": self._ar(ev, "large")})
        return out

    def _unknown_stats(self, ev: COCOeval) -> dict:
        return {"AP_unk": self._ap(ev), "AP50_unk": self._ap(ev, 0.5),
                "AR_unk@10": self._ar(ev, max_det=10), "AR_unk@30": self._ar(ev, max_det=30),
                "AR_unk@100": self._ar(ev, max_det=100)}

    def _per_class_ap(self, ev: COCOeval) -> dict:
        prec = ev.eval["precision"][:, :, :, 0, -1]
        return {self.class_names[c]: _mean_valid(prec[:, :, k]) for k, c in enumerate(ev.params.catIds)}

    def _open_set_errors(self, coco_gt: COCO, coco_dt: COCO, iou_type: str, known_ev: COCOeval) -> dict:
        """AOSE, K_det_as_other_K, K_det_as_UNK and WI, all at IoU 0.5, area all, maxDets 100."""
        matcher = _RegroupedMatcher(coco_gt, coco_dt, iou_type)
        matcher.params.catIds = self.known_category_ids + [UNKNOWN_ID]
        with _quiet():
            matcher._prepare()  # crowd -> ignore flags, masks -> RLE, grouped by (image, category)
        gts, dts = matcher._gts, matcher._dts
        known = self.known_category_ids
        counted = set(known) if self.aose_classes == "all" else self.classes_with_gt
        os_matched: set = set()  # ids of known detections that hit an unknown GT
        aose = other_known = k_det_as_unk = 0
        for img in self.images:
            gt_by_cat = {c: gts.get((img, c), []) for c in known}
            unknown_gts = gts.get((img, UNKNOWN_ID), [])
            for c in known:
                dets_c = dts.get((img, c), [])
                if not dets_c:
                    continue
                hit_unknown = matcher.match(img, ("unknown_gt", c), unknown_gts, dets_c)
                os_matched |= hit_unknown
                if c in counted:
                    aose += len(hit_unknown)
                others = [g for c2 in known if c2 != c for g in gt_by_cat[c2]]
                other_known += len(matcher.match(img, ("other_known_gt", c), others, dets_c))
            all_known_gts = [g for c in known for g in gt_by_cat[c]]
            k_det_as_unk += len(matcher.match(img, "known_gt", all_known_gts, dts.get((img, UNKNOWN_ID), [])))
        return {"AOSE": int(aose), "WI": self._wilderness_impact(known_ev, os_matched),
                "K_det_as_other_K": int(other_known), "K_det_as_UNK": int(k_det_as_unk)}

    def _wilderness_impact(self, ev: COCOeval, os_matched: set) -> float:
        """Openset RCNN's COCO-style WI: mean_c FP_os / mean_c (TP+FP), read where recall first reaches 0.8.

        Per known class, its detections of all images are ranked by score (as COCOeval.accumulate does) at
        IoU 0.5, area all, maxDets 100. A class that never reaches recall 0.8 is read at its last point;
        classes without GT or without detections are skipped. Returned as a ratio (0.06 = 6 %).
        """
        n_img = len(ev.params.imgIds)
        n_area = len(ev.params.areaRng)
        t = int(np.argmin(np.abs(ev.params.iouThrs - OPEN_SET_IOU)))
        fp_os_per_class, tp_fp_per_class = [], []
        for k in range(len(ev.params.catIds)):
            start = k * n_area * n_img  # evalImgs order: category, area range, image (area index 0 = all)
            entries = [e for e in ev.evalImgs[start:start + n_img] if e is not None]
            if not entries:
                continue
            npig = int(sum(np.count_nonzero(e["gtIgnore"] == 0) for e in entries))
            scores = np.concatenate([np.asarray(e["dtScores"], dtype=float) for e in entries])
            if npig == 0 or scores.size == 0:
                continue
            order = np.argsort(-scores, kind="mergesort")
            matched = np.concatenate([e["dtMatches"][t] for e in entries])[order] > 0
            ignored = np.concatenate([e["dtIgnore"][t] for e in entries])[order] > 0
            ids = np.concatenate([np.asarray(e["dtIds"]) for e in entries])[order]
            counted = ~ignored
            tp = np.cumsum(matched & counted)
            tp_fp = np.cumsum(counted)
            fp_os = np.cumsum(np.fromiter((i in os_matched for i in ids), bool, ids.size) & counted)
            reached = np.nonzero(tp / npig >= WI_RECALL)[0]
            at = int(reached[0]) if reached.size else ids.size - 1
            fp_os_per_class.append(fp_os[at])
            tp_fp_per_class.append(tp_fp[at])
        if not tp_fp_per_class or np.mean(tp_fp_per_class) == 0:
            return float("nan")
        return float(np.mean(fp_os_per_class) / np.mean(tp_fp_per_class))

    def _store_pr_curves(self, iou_type: str, known_ev: COCOeval, unknown_ev: COCOeval) -> None:
        """Precision over COCO's 101 recall points at IoU 0.5, area all, maxDets 100 (for the PR plot)."""
        recall = np.asarray(known_ev.params.recThrs)
        known = {}
        prec = known_ev.eval["precision"][0, :, :, 0, -1]
        for k, c in enumerate(known_ev.params.catIds):
            if np.all(prec[:, k] > -1):
                known[self.class_names[c]] = prec[:, k].copy()
        unk = unknown_ev.eval["precision"][0, :, 0, 0, -1]
        self.pr_curves[iou_type] = {"recall": recall, "known": known,
                                    "unknown": unk.copy() if np.all(unk > -1) else None}


def evaluate_result_file(gt, known_category_ids, results_path: str | os.PathLike,
                         iou_types: Sequence[str] = ("bbox", "segm")) -> tuple[dict, OpenSetEvaluator]:
    """Convenience: evaluate a COCO result JSON file; returns (metrics, evaluator)."""
    ev = OpenSetEvaluator(gt, known_category_ids, iou_types)
    return ev.evaluate(load_results_json(results_path), source=os.fspath(results_path)), ev
