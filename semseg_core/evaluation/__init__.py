"""Open-set evaluation (SemSeg's COCO-style metrics) and COCO result-file helpers."""
from .coco_io import (UNKNOWN_ID, CocoFormatError, load_coco_gt, load_results_json, save_results_json,
                      segmentation_to_rle)
from .conversion import (boxes_to_xywh, class_index_to_category_id, instances_to_coco, masks_to_rle,
                         results_from_label_image, results_to_coco)
from .model_eval import evaluate_and_report, evaluate_model, model_to_coco_results, unknown_decision_disabled
from .open_set_eval import MAX_DETS, OpenSetEvaluator, evaluate_result_file
from .report import format_metrics_table, plot_pr_curves, save_metrics_json

__all__ = [
    "UNKNOWN_ID", "CocoFormatError", "OpenSetEvaluator", "MAX_DETS", "evaluate_result_file",
    "results_to_coco", "instances_to_coco", "results_from_label_image", "masks_to_rle", "boxes_to_xywh",
    "class_index_to_category_id", "load_coco_gt", "load_results_json", "save_results_json", "segmentation_to_rle",
    "format_metrics_table", "plot_pr_curves", "save_metrics_json",
    "evaluate_model", "evaluate_and_report", "model_to_coco_results", "unknown_decision_disabled",
]
