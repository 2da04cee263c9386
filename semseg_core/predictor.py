"""Predictor: an HxWx3 uint8 image in, per-instance boxes, classes (or unknown), masks and a label image out.

    p = Predictor()                                     # the embedded tiny synthetic model
    p = Predictor(weights="model_final.pth")            # our checkpoint: its config is stored inside
    p = Predictor(config="config/models/COCO/semseg_R50_FPN_128k.yaml", weights="d2_model_final.pth",
                  device="cuda", amp="fp16", overrides=["MODEL.DML.UNK_THR", "0.1"])
    r = p(image_rgb)                                    # or p(image_bgr, color="bgr"): the authors' raw output
    r = p(image_rgb, options=PostprocessOptions(output="instance_map"))   # one instance per object (planner)
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch.nn import functional as F

from .checkpoint import apply_checkpoint, checkpoint_config_text, load_checkpoint
from .config import CfgNode, ConfigError, get_cfg
from .constants import UNKNOWN_ID, UNKNOWN_NAME
from .data.transforms import resize_image_pil, resize_shortest_edge_size
from .device import resolve_device
from .modeling import build_model
from .postprocess import ModelRules, PostprocessOptions, postprocess
from .precision import AMP_DTYPES, amp_name

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
DEFAULT_WEIGHTS = os.path.join(ASSETS_DIR, "semseg_tiny_synthetic.pt")
# The tabletop model (nine household meshes known; README "Your own objects"): the RGB-D demo's default.
TABLETOP_WEIGHTS = os.path.join(ASSETS_DIR, "semseg_tiny_tabletop.pt")
# TEST.COMPILE -> compile or not (None: CUDA yes, CPU no); not on/off, which YAML reads as booleans.
COMPILE_MODES = {"auto": None, "enabled": True, "disabled": False, "cudagraphs": True}


@dataclass
class Result:
    """One image's instances, sorted by score (descending); numpy arrays; coordinates in input pixels."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64: known-class index 0..K-1, or UNKNOWN_ID
    class_names: List[str]  # known class name or "unknown"
    is_known: np.ndarray  # (N,) bool
    unknown_scores: np.ndarray  # (N,) float32: cosine distance to the nearest prototype
    masks: Optional[np.ndarray]  # (N, H, W) bool; None when the caller asked for masks=False
    label_image: np.ndarray  # (H, W) uint16: 0 background, k = instance k-1; raw: overlaps go to the higher score
    inference_time_s: float = 0.0
    extras: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class RawOutput:
    """One image's model output (device tensors, see CONTRACTS.md "Model") and the image size it refers to."""

    output: dict
    height: int
    width: int


def _check_batch(images) -> None:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError("predict_batch takes a list of images; call the predictor directly for one image")


def _build_cfg(config, weights: Optional[str], checkpoint: Optional[dict], overrides: Sequence[str]) -> CfgNode:
    cfg = get_cfg()
    if config is not None:
        if isinstance(config, CfgNode):
            cfg.merge_from_other_cfg(config)
        else:
            cfg.merge_from_file(os.fspath(config))
    elif checkpoint is not None:
        text = checkpoint_config_text(checkpoint)
        if not text:
            raise ConfigError(f"checkpoint {weights} has no embedded config (not one of our checkpoints?); "
                              "pass config=<model YAML> as well")
        cfg.merge_from_str(text, source=f"config stored in {weights}")
    if overrides:
        cfg.merge_from_list(list(overrides), source="Predictor overrides")
    return cfg


class Predictor:
    """SemSeg inference on numpy images. See the module docstring and CONTRACTS.md."""

    def __init__(self, config: Union[str, CfgNode, None] = None, weights: Optional[str] = None,
                 device: Union[str, torch.device] = "cpu", amp: Optional[str] = None,
                 overrides: Optional[Sequence[str]] = None, compile: Optional[bool] = None):
        """amp: None = the config's TEST.AMP ("" = fp32); "fp16" / "bf16" = CUDA autocast.
        compile: torch.compile the backbone + FPN (the fixed-shape part of the frame; the first frame compiles,
        seconds; a second input size recompiles once with symbolic sizes). None = the config's TEST.COMPILE ("auto": on for CUDA,
        off on the CPU, where compile time outweighs the gain; "cudagraphs": compiled and replayed as a CUDA
        graph); True on the CPU needs a C++ compiler.
        BENCHMARKS.md has the cost both ways."""
        self.device = resolve_device(device)
        amp = None if amp is None else amp_name(amp, "amp")  # float16 | bfloat16 (fp16 | bf16 accepted)

        if config is None and weights is None:
            weights = DEFAULT_WEIGHTS
            if not os.path.isfile(weights):
                raise FileNotFoundError(
                    f"the embedded default model {weights} is not there yet (it is trained from the synthetic "
                    "config); pass config=<model YAML> and weights=<checkpoint> instead")
        checkpoint = load_checkpoint(weights) if weights is not None else None
        cfg = _build_cfg(config, weights, checkpoint, overrides or [])
        if weights is None and cfg.MODEL.WEIGHTS:
            weights = cfg.MODEL.WEIGHTS
        cfg.MODEL.DEVICE = str(self.device)
        cfg.MODEL.WEIGHTS = weights or ""
        names = list(cfg.DATASETS.KNOWN_CLASSES)
        if len(names) != cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES:
            raise ConfigError(f"DATASETS.KNOWN_CLASSES has {len(names)} names but MODEL.ROI_HEADS.NUM_KNOWN_CLASSES "
                              f"is {cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES}")
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {cfg.INPUT.FORMAT!r}")
        cfg.freeze()
        self.cfg = cfg
        if amp is None and cfg.TEST.AMP:
            try:
                amp = amp_name(cfg.TEST.AMP, "TEST.AMP")
            except ValueError as error:
                raise ConfigError(f"{error} ('' = float32)") from None
        if amp is not None and self.device.type != "cuda":
            raise ValueError(f"amp={amp!r} (argument or TEST.AMP) is for CUDA devices; on {self.device} run "
                             "without amp")
        self.amp = amp
        if cfg.TEST.COMPILE not in COMPILE_MODES:
            raise ConfigError(f"TEST.COMPILE must be one of {sorted(COMPILE_MODES)}, got {cfg.TEST.COMPILE!r}")
        if compile is None:
            compile = COMPILE_MODES[cfg.TEST.COMPILE]
        self.class_names: List[str] = names
        self.input_format = cfg.INPUT.FORMAT
        self.model_rules = ModelRules.from_config(cfg)  # the model's own rules, re-run by post-processing

        model = build_model(cfg)
        if weights is None:
            warnings.warn("Predictor without weights: the model is randomly initialised", stacklevel=2)
        else:
            apply_checkpoint(model, checkpoint if checkpoint is not None else load_checkpoint(weights), weights)
        if cfg.MODEL.CHANNELS_LAST:
            model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.compiled = self.device.type == "cuda" if compile is None else bool(compile)  # None: "auto"
        if self.compiled:
            # dynamic=None (torch's automatic dynamic shapes): static kernels while the input size stays the
            # same (a camera); when it changes (a dataset) one recompile with symbolic sizes, not one per size.
            # "cudagraphs": also replay the backbone's kernels as one CUDA graph (mode reduce-overhead).
            mode = "reduce-overhead" if cfg.TEST.COMPILE == "cudagraphs" else "default"
            self.model.backbone = torch.compile(self.model.backbone, dynamic=None, mode=mode)

    # ---------------------------------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, color: str = "rgb", masks: bool = True,
                 options: Optional[PostprocessOptions] = None) -> Result:
        return self.predict_batch([image], color=color, masks=masks, options=options)[0]

    def predict_batch(self, images: Sequence[np.ndarray], color: str = "rgb", masks: bool = True,
                      options: Optional[PostprocessOptions] = None) -> List[Result]:
        """Run one batch; each Result's inference_time_s is the batch time divided by the batch size.

        options: every test-time rule (semseg_core.postprocess.PostprocessOptions); None = the authors' raw
        output with nothing dropped. options.output="instance_map" gives one non-overlapping instance per object.
        masks=False: Result.masks is None and only the label image leaves the device; on a GPU this saves the
        host copy of N full-frame masks (0.45x the frame time at 800x1333 on an H200, BENCHMARKS.md)."""
        if options is None:
            options = PostprocessOptions()
        elif not isinstance(options, PostprocessOptions):
            raise TypeError(f"options must be a PostprocessOptions, got {type(options).__name__}")
        _check_batch(images)
        if len(images) == 0:
            return []
        start = time.perf_counter()
        with torch.inference_mode():
            results = [self.result_from(raw, options, masks) for raw in self.raw_outputs(images, color)]
        per_image = (time.perf_counter() - start) / len(results)
        for r in results:
            r.inference_time_s = per_image
        return results

    def raw_outputs(self, images: Sequence[np.ndarray], color: str = "rgb") -> List[RawOutput]:
        """The model's outputs (device tensors) of a batch, before any post-processing: run the model once and
        post-process them as often as needed with ``result_from`` (e.g. several PostprocessOptions)."""
        color = str(color).lower()
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
        _check_batch(images)
        inputs = [self._prepare(image, color, i) for i, image in enumerate(images)]
        with torch.inference_mode(), self._autocast():
            outputs = self.model(inputs)
        return [RawOutput(out, item["height"], item["width"]) for out, item in zip(outputs, inputs)]

    def result_from(self, raw: RawOutput, options: Optional[PostprocessOptions] = None,
                    masks: bool = True) -> Result:
        """A Result from one raw model output under ``options`` (None = the authors' raw output)."""
        with torch.inference_mode(), self._autocast():
            return self._to_result(raw.output, raw.height, raw.width, options, masks)

    def _autocast(self):
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=AMP_DTYPES[self.amp])

    def _prepare(self, image: np.ndarray, color: str, index: int) -> dict:
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image {index}: expected a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected shape (H, W, 3), got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image {index}: expected dtype uint8, got {image.dtype}")
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            raise ValueError(f"image {index}: empty image {image.shape}")
        new_h, new_w = resize_shortest_edge_size(h, w, int(self.cfg.INPUT.MIN_SIZE_TEST),
                                                 int(self.cfg.INPUT.MAX_SIZE_TEST))
        if self.cfg.INPUT.TEST_RESIZE not in ("pil", "device"):
            raise ConfigError(f"INPUT.TEST_RESIZE must be 'pil' or 'device', got {self.cfg.INPUT.TEST_RESIZE!r}")
        on_device = self.cfg.INPUT.TEST_RESIZE == "device"
        if not on_device:
            # detectron2's ResizeShortestEdge: the uint8 image through PIL bilinear, on the host (faithful).
            image = resize_image_pil(image, new_h, new_w)
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image)  # torch.from_numpy wants a writable, contiguous array (e.g. ROS buffers are read-only)
        tensor = torch.from_numpy(image)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()  # page-locked, so the copy below is asynchronous
        tensor = tensor.to(self.device, non_blocking=True).permute(2, 0, 1)
        if color != self.input_format.lower():
            tensor = tensor.flip(0)  # RGB <-> BGR
        if on_device and (new_h, new_w) != (h, w):
            # [ours] faster switch: bilinear on floats on the device, rounded back to uint8 (differs from PIL by
            # one grey level on a few % of the pixels; BENCHMARKS.md "Input resize").
            resized = F.interpolate(tensor[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False)
            tensor = resized[0].round_().clamp_(0, 255).to(torch.uint8)
        return {"image": tensor.contiguous(), "height": h, "width": w}

    def _to_result(self, out: dict, height: int, width: int, options: Optional[PostprocessOptions] = None,
                   return_masks: bool = True) -> Result:
        instances = postprocess(out, height, width, options or PostprocessOptions(), self.model_rules, return_masks)
        label_image = instances.label_image.to(torch.uint16).cpu().numpy()
        # One device-to-host copy for the per-instance values (class ids < 2^24 are exact in float32).
        table = torch.cat([instances.boxes, instances.scores[:, None], instances.classes[:, None].float(),
                           instances.unknown_scores[:, None]], dim=1).cpu().numpy()
        class_ids = table[:, 5].astype(np.int64)
        is_known = class_ids != UNKNOWN_ID
        names = [self.class_names[c] if known else UNKNOWN_NAME for c, known in zip(class_ids.tolist(), is_known)]
        return Result(
            boxes=np.ascontiguousarray(table[:, :4]),
            scores=np.ascontiguousarray(table[:, 4]),
            class_ids=class_ids,
            class_names=names,
            is_known=is_known,
            unknown_scores=np.ascontiguousarray(table[:, 6]),
            masks=instances.masks.cpu().numpy() if return_masks and instances.masks is not None else None,
            label_image=label_image,
        )
