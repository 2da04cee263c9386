"""Checkpoints: atomic save, safe load (`torch.load(weights_only=True)`), import of the authors' detectron2 SemSeg
checkpoints (`model_final.pth`, a `{"model": state_dict}` pickle of tensors), and ImageNet backbone initialisation
from detectron2's `R-50.pkl` (caffe2 names, a pickle of numpy arrays read by a numpy-only unpickler) or from
torchvision's ResNet-50 state dict.

Our format: `{"model": state_dict, "config": cfg.dump(), "meta": {...}, **extra}`.
CLI: `python -m semseg_core.checkpoint convert-d2 model_final.pth out.pth --config CONFIG.yaml [KEY VALUE ...]`.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import pickle
import re
import sys
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from semseg_core.atomic_io import atomic_open
from semseg_core.config import get_cfg, load_config
from semseg_core.modeling import build_model

logger = logging.getLogger(__name__)

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
                f"checkpoint {path} is a torch file holding numpy arrays, which safe (weights_only) loading does "
                "not read; re-save it with torch tensors (detectron2 / caffe2 .pkl weights such as R-50.pkl are "
                "read as they are through MODEL.WEIGHTS)") from None
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
# ImageNet backbone initialisation (the authors' start: detectron2's ImageNetPretrained/MSRA/R-50.pkl)
# ---------------------------------------------------------------------------------------------------------------
BACKBONE_PREFIX = "backbone.body."


def _numpy_globals() -> Dict[Tuple[str, str], Any]:
    """The only globals a pickle of numpy arrays needs, under the module names numpy 1.x (and Python 2) and 2.x use."""
    reconstruct = np.ndarray(0).__reduce__()[0]  # numpy's array rebuilder
    scalar = np.float32(0).__reduce__()[0]  # numpy's scalar rebuilder
    allowed: Dict[Tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("collections", "OrderedDict"): collections.OrderedDict}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"] = reconstruct
        allowed[module, "scalar"] = scalar
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes and scalars and plain containers; any other global is refused (no code runs)."""

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed: only numpy arrays and plain "
                                         "containers are read from a .pkl weights file") from None


def read_numpy_pickle(path: str) -> Dict[str, np.ndarray]:
    """Name -> numpy array of a detectron2 / caffe2 weights pickle (e.g. detectron2's ImageNet `R-50.pkl`).

    Python-2 pickles are read with latin1 (what detectron2 does); a `{"blobs": ...}` (caffe2 detection file) or
    `{"model": ..., "__author__": ...}` (detectron2 model zoo) wrapper is unwrapped and caffe2's `*_momentum`
    solver entries are dropped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (EOFError, ValueError, TypeError, IndexError, AttributeError, ImportError) as err:
        raise CheckpointError(f"{path} is truncated, corrupt or not a pickle of numpy arrays "
                              f"({type(err).__name__}: {err})") from None
    if isinstance(data, Mapping) and "model" in data and "__author__" in data:
        data = data["model"]
    elif isinstance(data, Mapping) and "blobs" in data:
        data = data["blobs"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of named numpy arrays, got {type(data).__name__}")
    arrays = {str(k): v for k, v in data.items() if not str(k).endswith("_momentum")}
    bad = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not numpy arrays: {_list(bad)}")
    return arrays


_C2_BN_FIELDS = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var",
                 "s": "weight", "b": "bias"}  # s / b: the older files with BN folded into an affine
_C2_CONV_OF_BRANCH = {"2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_IGNORED = re.compile(r"^(fc1000_[wb]|conv1_b)$")  # classifier; the MSRA stem bias detectron2 ignores too
_C2_RULES = [
    (re.compile(r"^conv1_w$"), lambda m: "conv1.weight"),
    (re.compile(r"^res_conv1_bn_(gamma|beta|running_mean|running_var|s|b)$"), lambda m: f"bn1.{_C2_BN_FIELDS[m[1]]}"),
    (re.compile(r"^res([2-5])_(\d+)_branch(2[abc])_w$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.{_C2_CONV_OF_BRANCH[m[3]]}.weight"),
    (re.compile(r"^res([2-5])_(\d+)_branch(2[abc])_bn_(gamma|beta|running_mean|running_var|s|b)$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{_C2_CONV_OF_BRANCH[m[3]][-1]}.{_C2_BN_FIELDS[m[4]]}"),
    (re.compile(r"^res([2-5])_(\d+)_branch1_w$"), lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (re.compile(r"^res([2-5])_(\d+)_branch1_bn_(gamma|beta|running_mean|running_var|s|b)$"),
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{_C2_BN_FIELDS[m[3]]}"),
]


def map_caffe2_key(key: str) -> Optional[str]:
    """Our trunk name (relative to `backbone.body.`) of a caffe2 ResNet blob name, or None."""
    for pattern, replacement in _C2_RULES:
        match = pattern.match(key)
        if match:
            return replacement(match)
    return None


# The conventions each ImageNet file was trained with (detectron2's MODEL_ZOO notes): config values they need.
MSRA_CONVENTION = {"MODEL.BACKBONE.NAME": "resnet50_msra", "INPUT.FORMAT": "BGR",
                   "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675], "MODEL.PIXEL_STD": [1.0, 1.0, 1.0]}
TORCHVISION_CONVENTION = {"MODEL.BACKBONE.NAME": "resnet50_torchvision", "INPUT.FORMAT": "RGB",
                          "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530], "MODEL.PIXEL_STD": [58.395, 57.120, 57.375]}


@dataclass
class BackboneInitReport:
    """What an ImageNet backbone file gave the model and what stays at its random initialisation."""

    source: str
    file_format: str
    loaded: List[str] = field(default_factory=list)  # our model keys
    ignored: List[str] = field(default_factory=list)  # file entries not used (classifier, stem bias, ...)
    random: List[str] = field(default_factory=list)  # model keys left at their initialisation

    def __str__(self) -> str:
        groups: Dict[str, int] = collections.Counter(".".join(k.split(".")[:2]) for k in self.random)
        random = ", ".join(f"{g} ({n})" for g, n in sorted(groups.items())) or "nothing"
        return (f"backbone initialised from {self.source} ({self.file_format}): loaded {len(self.loaded)} trunk "
                f"tensors; ignored file entries: {', '.join(self.ignored) or 'none'}; left at random init: "
                f"{len(self.random)} tensors: {random}")


def _check_convention(cfg, convention: Mapping[str, Any], source: str, file_format: str) -> None:
    def value(dotted: str):
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        return list(node) if isinstance(node, (list, tuple)) else node

    def differs(have, want) -> bool:
        if isinstance(want, list):
            return len(have) != len(want) or not np.allclose(have, want)
        return have != want

    wrong = [(k, value(k), v) for k, v in convention.items() if differs(value(k), v)]
    if wrong:
        needed = " ".join(f"{k} " + (str(v).replace(" ", "") if isinstance(v, list) else str(v))
                          for k, _, v in wrong)
        found = "; ".join(f"{k} is {have!r}" for k, have, _ in wrong)
        raise CheckpointError(f"{source} is {file_format}, trained with other input conventions than this config: "
                              f"{found}. Set: {needed}")


def _load_trunk(model: nn.Module, trunk_state: Mapping[str, torch.Tensor], report: BackboneInitReport,
                folded_bn: bool) -> BackboneInitReport:
    target = model.state_dict()
    trunk_keys = [k for k in target if k.startswith(BACKBONE_PREFIX)]
    unexpected = [k for k in trunk_state if BACKBONE_PREFIX + k not in target]
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(target[BACKBONE_PREFIX + k].shape)}"
                  for k, v in trunk_state.items()
                  if BACKBONE_PREFIX + k in target and tuple(v.shape) != tuple(target[BACKBONE_PREFIX + k].shape)]
    filled = {BACKBONE_PREFIX + k for k in trunk_state}
    if folded_bn:  # BN folded into weight/bias: the statistics are the identity (detectron2 does the same)
        filled |= {k for k in trunk_keys if k.endswith(("running_mean", "running_var"))}
    missing = [k for k in trunk_keys if k not in filled]
    if unexpected or mismatched or missing:
        raise CheckpointError(
            f"{report.source} ({report.file_format}) does not fit this backbone (MODEL.BACKBONE.NAME?): "
            f"unexpected: {_list(unexpected) or 'none'}; shape mismatches: {_list(mismatched) or 'none'}; "
            f"trunk tensors without a value: {_list(missing) or 'none'}")
    with torch.no_grad():
        params = model.state_dict(keep_vars=True)
        for key in trunk_keys:
            name = key[len(BACKBONE_PREFIX):]
            if name in trunk_state:
                params[key].copy_(trunk_state[name].to(dtype=params[key].dtype))
            else:
                params[key].fill_(0.0 if key.endswith("running_mean") else 1.0)
    report.loaded = trunk_keys
    report.random = [k for k in target if not k.startswith(BACKBONE_PREFIX)]
    return report


def load_caffe2_resnet(model: nn.Module, path: str) -> BackboneInitReport:
    """detectron2's ImageNet `R-50.pkl` (caffe2 names, numpy arrays) -> the ResNet trunk of `model`."""
    arrays = read_numpy_pickle(path)
    report = BackboneInitReport(source=os.fspath(path), file_format="detectron2 ImageNet weights, caffe2 names")
    trunk, unmapped = {}, []
    for key, array in arrays.items():
        ours = map_caffe2_key(key)
        if ours is not None:
            trunk[ours] = torch.from_numpy(np.array(array, dtype=np.float32))
        elif _C2_IGNORED.match(key):
            report.ignored.append(key)
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(f"{path}: {len(unmapped)} entries are not caffe2 ResNet names: {_list(unmapped)}")
    folded = any(k.endswith("_bn_s") for k in arrays)
    return _load_trunk(model, trunk, report, folded_bn=folded)


def is_torchvision_resnet_state(state: Mapping[str, Any]) -> bool:
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state and "bn1.weight" in state


def load_torchvision_resnet(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> BackboneInitReport:
    """torchvision's ResNet state dict (`resnet50-*.pth`) -> the ResNet trunk of `model`."""
    report = BackboneInitReport(source=source, file_format="torchvision ImageNet ResNet weights")
    trunk = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            report.ignored.append(key)
        else:
            trunk[key] = value
    return _load_trunk(model, trunk, report, folded_bn=False)


# torch.save's legacy (pre-1.6, non-zip) format is a pickle too; it starts with this pickled magic number.
_TORCH_LEGACY_HEAD = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def is_numpy_pickle(path: str) -> bool:
    """A plain pickle that is not a torch file (zip or legacy format): detectron2 / caffe2 `.pkl` weights."""
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_HEAD))
    is_pickle = head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]")  # protocol 2+ / protocol 0-1 openings
    return is_pickle and not head.startswith(_TORCH_LEGACY_HEAD) and not zipfile.is_zipfile(path)


def load_initial_weights(cfg, model: nn.Module, path: str) -> Union[BackboneInitReport, ImportReport, str]:
    """MODEL.WEIGHTS at the start of training (or evaluation): a whole model (ours / the authors' detectron2
    checkpoint) or an ImageNet backbone file (R-50.pkl, torchvision), whose input conventions must be the config's.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS file not found: {path}")
    if is_numpy_pickle(path):
        _check_convention(cfg, MSRA_CONVENTION, path, "detectron2's ImageNet R-50 (MSRA, caffe2 names)")
        report = load_caffe2_resnet(model, path)
    else:
        checkpoint = load_checkpoint(path)
        if is_torchvision_resnet_state(checkpoint["model"]):
            _check_convention(cfg, TORCHVISION_CONVENTION, path, "torchvision's ImageNet ResNet")
            report = load_torchvision_resnet(model, checkpoint["model"], path)
        else:
            return apply_checkpoint(model, checkpoint, path)
    logger.info("%s", report)
    return report


def check_backbone_initialisation(cfg) -> None:
    """Training without MODEL.WEIGHTS keeps a FrozenBN trunk at identity norms and frozen stages at random init for
    the whole run: refuse it unless MODEL.BACKBONE.ALLOW_RANDOM_INIT says it is meant (tests, benchmarks)."""
    if cfg.MODEL.WEIGHTS or bool(cfg.MODEL.BACKBONE.ALLOW_RANDOM_INIT):
        return
    frozen_bn = cfg.MODEL.RESNETS.NORM == "FrozenBN"
    frozen_stages = int(cfg.MODEL.BACKBONE.FREEZE_AT) > 0
    if frozen_bn or frozen_stages:
        what = " and ".join(w for w, on in (("MODEL.RESNETS.NORM FrozenBN", frozen_bn),
                                             (f"MODEL.BACKBONE.FREEZE_AT {cfg.MODEL.BACKBONE.FREEZE_AT}",
                                              frozen_stages)) if on)
        raise CheckpointError(
            f"training with {what} needs pretrained weights, or the frozen parts stay random for the whole run. "
            "Set MODEL.WEIGHTS to detectron2's ImageNet R-50.pkl (the authors' start) or torchvision's ResNet-50 "
            "file (README, 'faithful to the authors'); train from scratch with MODEL.RESNETS.NORM GN/BN and "
            "MODEL.BACKBONE.FREEZE_AT 0; or set MODEL.BACKBONE.ALLOW_RANDOM_INIT True if this is meant")


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def _convert_d2(args) -> int:
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
