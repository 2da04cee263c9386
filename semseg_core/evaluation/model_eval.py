"""Evaluate a SemSeg model or a Predictor over a COCO test set and write every report file.

Files written to ``out_dir``: ``coco_results.json`` (COCO result format), ``metrics.json``, ``metrics.txt``
(the table) and ``pr_curves.png``. torch and the model code are imported lazily so that evaluating a result
file needs neither.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Callable, Iterable, Optional, Sequence

from .coco_io import read_json, save_results_json
from .conversion import results_to_coco
from .instance_metrics import FIGURES, InstanceMapEvaluator, format_instance_table, gt_label_image
from .open_set_eval import OpenSetEvaluator
from .report import format_metrics_table, plot_pr_curves, save_metrics_json

logger = logging.getLogger(__name__)

RESULTS_FILE = "coco_results.json"
METRICS_FILE = "metrics.json"
TABLE_FILE = "metrics.txt"
PLOT_FILE = "pr_curves.png"


def evaluate_and_report(gt, known_category_ids: Sequence[int], coco_results: list, out_dir: Optional[str],
                        iou_types: Sequence[str] = ("bbox", "segm"), title: str = "",
                        results_source: str = "<results>") -> dict:
    """Evaluate COCO results; when ``out_dir`` is given write results JSON, metrics JSON, table and PR plot."""
    start = time.perf_counter()
    evaluator = OpenSetEvaluator(gt, known_category_ids, iou_types)
    metrics = evaluator.evaluate(coco_results, source=results_source)
    logger.info("open-set evaluation of %d detections took %.2f s", len(coco_results), time.perf_counter() - start)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        if results_source == "<results>":  # results came from a model: keep them for other tools
            save_results_json(coco_results, os.path.join(out_dir, RESULTS_FILE))
        save_metrics_json(metrics, os.path.join(out_dir, METRICS_FILE))
        table = format_metrics_table(metrics)
        with open(os.path.join(out_dir, TABLE_FILE), "w", encoding="utf-8") as f:
            f.write((title + "\n\n" if title else "") + table + "\n")
        plot_pr_curves(evaluator.pr_curves, os.path.join(out_dir, PLOT_FILE), title=title)
    return metrics


def _embedding_of(model):
    core = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    try:
        embedding = core.roi_heads.embedding
        embedding.unknown_threshold  # noqa: B018  (fail here, clearly, if the attribute is missing)
    except AttributeError as e:
        raise AttributeError("force_known needs model.roi_heads.embedding.unknown_threshold "
                             f"(SemSeg's prototype embedding); {type(core).__name__} has none") from e
    return embedding


@contextlib.contextmanager
def unknown_decision_disabled(model):
    """Ablation "unknown decision disabled": every detection goes to its nearest known class.

    Sets the embedding's unknown threshold to +inf and restores it afterwards, also on error.
    """
    embedding = _embedding_of(model)
    saved = embedding.unknown_threshold
    embedding.unknown_threshold = float("inf")
    try:
        yield model
    finally:
        embedding.unknown_threshold = saved


def model_to_coco_results(model, batches: Iterable, known_category_ids: Sequence[int], with_masks: bool,
                          progress: Optional[Callable[[int], None]] = None) -> list:
    """Run a SemSeg nn.Module (eval mode) over test-loader batches; paste masks; convert to COCO results."""
    import torch  # torch-free evaluation package: scoring a result file needs no torch

    from semseg_core.modeling.postprocess import paste_masks  # torch-free, as above

    results = []
    n_images = 0
    with torch.no_grad():
        for batch in batches:
            batch = batch if isinstance(batch, (list, tuple)) else [batch]
            outputs = model(list(batch))
            for inputs, out in zip(batch, outputs):
                pred = {"boxes": out["boxes"], "scores": out["scores"], "classes": out["classes"]}
                if with_masks:
                    if "mask_probs" not in out:
                        raise KeyError("segm evaluation needs 'mask_probs' in the model outputs (MODEL.MASK_ON)")
                    pred["masks"] = paste_masks(out["mask_probs"], out["boxes"], int(inputs["height"]),
                                                int(inputs["width"]))
                results += results_to_coco(int(inputs["image_id"]), pred, known_category_ids, with_masks=with_masks)
                n_images += 1
                if progress is not None:
                    progress(n_images)
    return results


def evaluate_model(cfg, model, dataset_name: str, out_dir: str, force_known: bool = False) -> dict:
    """Evaluate a SemSeg model on a registered test dataset (what the training engine calls periodically).

    ``force_known=True`` is the ablation with the unknown decision disabled. The model's train/eval mode
    and threshold are restored afterwards. Returns ``{"bbox": {...}, "segm": {...}}``.
    """
    from semseg_core.data import build_test_loader, get_dataset_meta  # torch-free, as above (the loader imports torch)

    meta = get_dataset_meta(dataset_name, cfg)
    with_masks = bool(cfg.MODEL.MASK_ON)
    iou_types = ("bbox", "segm") if with_masks else ("bbox",)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        ablation = unknown_decision_disabled(model) if force_known else contextlib.nullcontext()
        with ablation:
            results = model_to_coco_results(model, build_test_loader(cfg, dataset_name),
                                            meta["known_category_ids"], with_masks)
    finally:
        model.train(was_training)
    logger.info("inference on %s: %d detections in %.1f s", dataset_name, len(results), time.perf_counter() - start)
    title = f"{dataset_name}" + (" (unknown decision disabled)" if force_known else "")
    return evaluate_and_report(meta["json_file"], meta["known_category_ids"], results, out_dir, iou_types, title)


# ---- Predictor outputs side by side (raw vs instance map) -------------------------------------------------------
OUTPUTS_TABLE_FILE = "outputs.txt"
OUTPUTS_JSON_FILE = "outputs.json"
INSTANCES_FILE = "instances.json"
# (metric, IoU type, label) of the open-set COCO metrics shown in the side-by-side table
OPEN_SET_ROWS = (("AP_k", "segm", "AP_k (segm)"), ("AP_k", "bbox", "AP_k (bbox)"), ("AOSE", "segm", "AOSE (segm)"),
                 ("AR_unk@100", "segm", "AR_unk@100 (segm)"), ("AP_unk", "segm", "AP_unk (segm)"),
                 ("num_detections", "segm", "detections"))


def predictor_outputs(predictor, gt_json: str, image_root: str, known_category_ids: Sequence[int],
                      options_by_name: dict, read_image: Callable[[str], object]) -> dict:
    """Run a Predictor over every image of a COCO json once per named PostprocessOptions.

    Returns {name: (COCO results, InstanceMapEvaluator)}: COCO results for the open-set evaluator (from the
    result's masks, overlapping ones included, as the paper's evaluation sees them) and the per-object figures of
    the label image (instance_metrics)."""
    data = read_json(gt_json, "Ground-truth annotation")
    anns_of: dict = {}
    for ann in data.get("annotations", []):
        anns_of.setdefault(ann["image_id"], []).append(ann)
    collected = {name: ([], InstanceMapEvaluator()) for name in options_by_name}
    start = time.perf_counter()
    images = data.get("images", [])
    for n, img in enumerate(images, start=1):
        rgb = read_image(os.path.join(image_root, img["file_name"]))
        gt, gt_classes = gt_label_image(anns_of.get(img["id"], []), int(img["height"]), int(img["width"]),
                                        known_category_ids)
        raw = predictor.raw_outputs([rgb])[0]  # the model once; each output post-processes the same detections
        for name, options in options_by_name.items():
            result = predictor.result_from(raw, options)
            results, evaluator = collected[name]
            results += results_to_coco(img["id"], result, known_category_ids)
            evaluator.add(result.label_image, {k + 1: int(c) for k, c in enumerate(result.class_ids)}, gt, gt_classes)
        if n % 50 == 0 or n == len(images):
            logger.info("%d/%d images, %.3f s/image", n, len(images), (time.perf_counter() - start) / n)
    return collected


def evaluate_outputs(predictor, gt_json: str, image_root: str, known_category_ids: Sequence[int],
                     options_by_name: dict, out_dir: Optional[str], read_image: Callable[[str], object],
                     iou_types: Sequence[str] = ("bbox", "segm"), title: str = "") -> dict:
    """Open-set metrics and per-object figures of each named output; with ``out_dir``, each output's report in
    ``out_dir`` (one output) or ``out_dir/<name>/`` (several), its ``instances.json``, and for several outputs the
    side-by-side table ``outputs.txt`` / ``outputs.json``. Returns {name: {"bbox", "segm", "instances"}}."""
    collected = predictor_outputs(predictor, gt_json, image_root, known_category_ids, options_by_name, read_image)
    everything = {}
    for name, (results, evaluator) in collected.items():
        folder = out_dir if (out_dir and len(collected) == 1) else (os.path.join(out_dir, name) if out_dir else None)
        metrics = evaluate_and_report(gt_json, known_category_ids, results, folder, iou_types,
                                      title=f"{title} [{name}]" if title else name)
        metrics = dict(metrics, instances=evaluator.summary())
        if folder:
            save_metrics_json(metrics["instances"], os.path.join(folder, INSTANCES_FILE))
        everything[name] = metrics
    if out_dir and len(collected) > 1:
        table = format_outputs_table(everything)
        with open(os.path.join(out_dir, OUTPUTS_TABLE_FILE), "w", encoding="utf-8") as f:
            f.write((title + "\n\n" if title else "") + table + "\n")
        save_metrics_json(everything, os.path.join(out_dir, OUTPUTS_JSON_FILE))
    return everything


def format_outputs_table(everything: dict) -> str:
    """One column per output: the open-set COCO metrics, then the per-object figures."""
    names = list(everything)
    width = max(len(label) for _, label, _ in FIGURES) + 2
    lines = [f"{'':<{width}}" + "".join(f"{n:>14}" for n in names)]
    for key, iou_type, label in OPEN_SET_ROWS:
        cells = []
        for n in names:
            value = everything[n].get(iou_type, {}).get(key)
            cells.append("-" if value is None or value != value else
                         (f"{int(value)}" if key in ("AOSE", "num_detections") else f"{value:.2f}"))
        lines.append(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
    per_object = format_instance_table({n: everything[n]["instances"] for n in names}, width).split("\n")[1:]
    return "\n".join(lines + per_object)
