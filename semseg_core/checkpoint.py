"""Checkpoints: atomic save, safe load (`torch.load(weights_only=True)`), and import of the authors'
detectron2 SemSeg checkpoints (`model_final.pth`, a `{"model": state_dict}` pickle of tensors).

Our format: `{"model": state_dict, "config": cfg.dump(), "meta": {...}, **extra}`.
CLI: `python -m semseg_core.checkpoint convert-d2 model_final.pth out.pth --config CONFIG.yaml [KEY VALUE ...]`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from semseg_core.atomic_io import atomic_open

FORMAT_NAME = "semseg_core"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the model."""


# ---------------------------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------------------------
def _check_serialisable(value: Any, where: str) -> None:
    """Only what `torch.load(weights_only=True)` reads back: tensors, str, numbers, bool, None, dict, list, tuple."""
    if isinstance(value, torch.Tensor) or type(value) in (str, int, float, bool, type(None)):
        return  # exact types: subclasses (e.g. torch's TorchVersion str) are refused by weights_only loading
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(k).__name__}; use str or int")
            _check_serialisable(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_serialisable(v, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint entry {where} has type {type(value).__name__}, which weights_only loading rejects; "
                    "store tensors, str, numbers, dicts or lists")


def save_checkpoint(path: str, model: Union[nn.Module, Mapping[str, torch.Tensor]], cfg=None, **extra) -> str:
    """Write `{"model", "config", "meta", **extra}` to `path` atomically (temp file + os.replace).

    A crash mid-write leaves no partial file at `path` (an existing file there stays intact).
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    meta = dict(extra.pop("meta", {}) or {})
    meta.setdefault("format", FORMAT_NAME)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("torch", str(torch.__version__))
    meta.setdefault("created_unix", time.time())
    payload: Dict[str, Any] = {"model": {k: v.detach().cpu() for k, v in state.items()},
                               "config": cfg.dump() if cfg is not None else "", "meta": meta}
    for key in ("model", "config"):
        if key in extra:
            raise TypeError(f"save_checkpoint: {key!r} is reserved and cannot be passed as an extra entry")
    payload.update(extra)
    _check_serialisable(payload, "checkpoint")

    path = os.fspath(path)
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


def _torch_load(path: str, map_location) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory, not a file: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "numpy" in text:
            raise CheckpointError(
                f"checkpoint {path} contains numpy arrays, which safe (weights_only) loading does not read; "
                "re-save it with torch tensors (e.g. a detectron2 model-zoo .pkl must be converted to a "
                "{'model': {name: torch.Tensor}} .pth first)") from None
        detail = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain containers, "
                              f"which safe (weights_only) loading refuses. {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated, corrupt or not a PyTorch file "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    """Read a checkpoint (ours, or any `{"model": state_dict}` file) safely.

    A bare state dict (name -> tensor) is returned wrapped as `{"model": ...}`.
    """
    path = os.fspath(path)
    obj = _torch_load(path, map_location)
    if isinstance(obj, Mapping) and "model" in obj:
        state = obj["model"]
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"checkpoint {path}: entry 'model' must map parameter names to tensors")
        return dict(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": dict(obj)}
    kind = type(obj).__name__ if not isinstance(obj, Mapping) else f"dict with keys {sorted(map(str, obj))[:8]}"
    raise CheckpointError(f"{path} is not a model checkpoint: expected a dict with a 'model' state dict, got {kind}")


def checkpoint_config_text(checkpoint: Mapping[str, Any]) -> str:
    """The YAML config stored in one of our checkpoints ("" if none)."""
    text = checkpoint.get("config", "")
    return text if isinstance(text, str) else ""


# ---------------------------------------------------------------------------------------------------------------
# detectron2 import
# ---------------------------------------------------------------------------------------------------------------
# Ordered (pattern, replacement) rules from the authors' detectron2 names to ours (CONTRACTS.md).
_D2_RULES: List[Tuple[str, str]] = [
    (r"^backbone\.fpn_lateral([2-5])\.(weight|bias)$", lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 2}.0.{m[2]}"),
    (r"^backbone\.fpn_output([2-5])\.(weight|bias)$", lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 2}.0.{m[2]}"),
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", "backbone.body.conv1.weight"),
    (r"^backbone\.bottom_up\.stem\.conv1\.norm\.(weight|bias|running_mean|running_var)$",
     lambda m: f"backbone.body.bn1.{m[1]}"),
    (r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.weight$",
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
    (r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.norm\.(weight|bias|running_mean|running_var)$",
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
    (r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.weight$",
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.norm\.(weight|bias|running_mean|running_var)$",
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
    (r"^proposal_generator\.rpn_head\.conv\.(weight|bias)$", lambda m: f"rpn.head.conv.{m[1]}"),
    (r"^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$", lambda m: f"rpn.head.box_deltas.{m[1]}"),
    (r"^proposal_generator\.rpn_head\.centerness\.(weight|bias)$", lambda m: f"rpn.head.centerness.{m[1]}"),
    (r"^roi_heads\.box_head\.fc(\d+)\.(weight|bias)$", lambda m: f"roi_heads.box_head.fc{m[1]}.{m[2]}"),
    (r"^roi_heads\.box_predictor\.(bbox_pred|iou_pred)\.(weight|bias)$",
     lambda m: f"roi_heads.box_predictor.{m[1]}.{m[2]}"),
    (r"^roi_heads\.mask_head\.conv\.(mask_fcn\d+|deconv|post_conv)\.(weight|bias)$",
     lambda m: f"roi_heads.mask_head.{m[1]}.{m[2]}"),
    (r"^roi_heads\.mask_head\.mask_embed\.([02])\.(weight|bias)$", lambda m: f"roi_heads.mask_head.kernel_mlp.{m[1]}.{m[2]}"),
    (r"^roi_heads\.dml\.representatives$", "roi_heads.embedding.prototypes"),
    (r"^roi_heads\.dml\.(encoder|decoder)\.(weight|bias)$", lambda m: f"roi_heads.embedding.{m[1]}.{m[2]}"),
    (r"^roi_heads\.softmaxcls\.cls_score\.(weight|bias)$", lambda m: f"roi_heads.classifier.cls_score.{m[1]}"),
]
_D2_COMPILED = [(re.compile(p), r) for p, r in _D2_RULES]


def map_detectron2_key(key: str) -> Optional[str]:
    """Our parameter name for one of the authors' detectron2 keys, or None if no rule covers it."""
    if key.startswith("module."):  # a DDP-wrapped state dict saved without unwrapping
        key = key[len("module."):]
    for pattern, replacement in _D2_COMPILED:
        match = pattern.match(key)
        if match:
            return replacement(match) if callable(replacement) else replacement
    return None


@dataclass
class ImportReport:
    source: str
    loaded: List[Tuple[str, str]] = field(default_factory=list)  # (detectron2 key, our key)
    num_elements: int = 0
    skipped_entries: List[str] = field(default_factory=list)  # top-level entries not needed (optimizer, ...)

    @property
    def num_loaded(self) -> int:
        return len(self.loaded)

    def __str__(self) -> str:
        skipped = f"; skipped top-level entries: {', '.join(self.skipped_entries)}" if self.skipped_entries else ""
        return (f"imported {self.num_loaded} tensors ({self.num_elements:,} elements) from {self.source}; "
                f"0 unmapped, 0 missing, 0 shape mismatches{skipped}")


def _list(items: List[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def import_detectron2_checkpoint(path_or_state_dict: Union[str, Mapping[str, Any]], model: nn.Module) -> ImportReport:
    """Load the authors' detectron2 SemSeg weights into `model`; every key must map and fit.

    Raises CheckpointError listing unmapped detectron2 keys, model keys left without a value, and shape
    mismatches. Optimizer / scheduler / iteration entries of a training checkpoint are skipped and reported.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        checkpoint = load_checkpoint(source)
    else:
        source = "<state dict>"
        checkpoint = dict(path_or_state_dict)
        if "model" not in checkpoint or not isinstance(checkpoint["model"], Mapping):
            checkpoint = {"model": checkpoint}
    d2_state = checkpoint["model"]
    report = ImportReport(source=source, skipped_entries=sorted(str(k) for k in checkpoint if k != "model"))

    target = model.state_dict()
    mapped: Dict[str, torch.Tensor] = {}
    unmapped, mismatched, duplicates = [], [], []
    mismatched_targets = set()
    for key, value in d2_state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        ours = map_detectron2_key(key)
        if ours is None or ours not in target:
            unmapped.append(key if ours is None else f"{key} -> {ours} (no such model key)")
            continue
        if ours in mapped:
            duplicates.append(f"{key} -> {ours}")
            continue
        if tuple(value.shape) != tuple(target[ours].shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {ours} {tuple(target[ours].shape)}")
            mismatched_targets.add(ours)
            continue
        mapped[ours] = value
        report.loaded.append((key, ours))
    missing = [k for k in target if k not in mapped and k not in mismatched_targets]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} unmapped detectron2 keys: {_list(unmapped)}")
    if duplicates:
        problems.append(f"{len(duplicates)} keys map onto an already filled model key: {_list(duplicates)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (is the config's NUM_KNOWN_CLASSES / "
                        f"backbone right?): {_list(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} model keys without a value in the checkpoint: {_list(missing)}")
    if problems:
        raise CheckpointError(f"cannot import detectron2 checkpoint {source}:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            tensor.copy_(mapped[name].to(dtype=tensor.dtype, device=tensor.device))
    report.num_elements = int(sum(v.numel() for v in mapped.values()))
    return report


def is_detectron2_state_dict(state: Mapping[str, Any]) -> bool:
    return any(k.startswith(("backbone.bottom_up.", "proposal_generator.", "module.backbone.bottom_up."))
               for k in state)


def apply_checkpoint(model: nn.Module, checkpoint: Mapping[str, Any], source: str) -> Union[ImportReport, str]:
    """Load an already read checkpoint into `model`: ours strictly, the authors' detectron2 one via the importer."""
    state = checkpoint["model"]
    if is_detectron2_state_dict(state):
        return import_detectron2_checkpoint(checkpoint, model)
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint {source} does not fit the model (wrong config?): "
            f"missing keys: {_list(missing) or 'none'}; unexpected keys: {_list(unexpected) or 'none'}; "
            f"shape mismatches: {_list(mismatched) or 'none'}")
    model.load_state_dict(state, strict=True)
    return f"loaded {len(state)} tensors from {source}"


def load_model_weights(model: nn.Module, path: str) -> Union[ImportReport, str]:
    """Load weights from one of our checkpoints (strict) or an authors' detectron2 checkpoint (imported)."""
    return apply_checkpoint(model, load_checkpoint(path), os.fspath(path))


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def _convert_d2(args) -> int:
    from semseg_core.config import load_config
    from semseg_core.modeling import build_model

    cfg = load_config(args.config, list(args.opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    report = import_detectron2_checkpoint(args.input, model)
    save_checkpoint(args.output, model, cfg,
                    meta={"converted_from": os.path.abspath(args.input), "converter": "detectron2"})
    print(report)
    print(f"wrote {args.output}")
    return 0


def _export(args) -> int:
    """Training checkpoint -> deployable model file: weights only (fp16 if asked), config embedded, overrides applied."""
    from semseg_core.config import get_cfg

    checkpoint = load_checkpoint(args.input)
    text = checkpoint_config_text(checkpoint)
    if not text:
        raise CheckpointError(f"{args.input} has no embedded config; export needs one of our training checkpoints")
    cfg = get_cfg()
    cfg.merge_from_str(text, source=f"config embedded in {args.input}")
    cfg.merge_from_list(list(args.opts) + ["MODEL.WEIGHTS", ""])
    state = {k: (v.half() if args.half and v.is_floating_point() else v) for k, v in checkpoint["model"].items()}
    meta = {"exported_from": os.path.basename(args.input), "half": bool(args.half)}
    if "iteration" in checkpoint:
        meta["iteration"] = int(checkpoint["iteration"])
    save_checkpoint(args.output, state, cfg, meta=meta)
    size = os.path.getsize(args.output) / 2**20
    print(f"wrote {args.output} ({size:.1f} MB, {len(state)} tensors{', fp16' if args.half else ''})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semseg_core.checkpoint", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-d2", help="convert an authors' detectron2 checkpoint to our format")
    conv.add_argument("input", help="detectron2 model_final.pth ({'model': state_dict} of tensors)")
    conv.add_argument("output", help="output checkpoint (our format, config embedded)")
    conv.add_argument("--config", required=True, help="model YAML, e.g. config/models/COCO/semseg_R50_FPN_128k.yaml")
    conv.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    export = sub.add_parser("export", help="training checkpoint -> compact model file for the Predictor / node")
    export.add_argument("input", help="our checkpoint, e.g. OUTPUT_DIR/model_final.pth")
    export.add_argument("output", help="output model file (weights + config, no optimizer state)")
    export.add_argument("--half", action="store_true", help="store floating-point weights in fp16 (half the size)")
    export.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. MODEL.DML.UNK_THR 0.3")
    args, extra = parser.parse_known_args(argv)  # KEY VALUE overrides may follow the options
    if any(item.startswith("-") for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.opts = list(args.opts) + extra
    try:
        return _convert_d2(args) if args.command == "convert-d2" else _export(args)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
