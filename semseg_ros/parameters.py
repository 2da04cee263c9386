"""The node's parameters: one table with defaults, descriptions, ranges and validation.

Every value is validated when it is set, at start and at run time alike, with a message naming the parameter:
a bad start value makes the node refuse to start, a bad ``set_parameters`` call is refused and changes nothing
(``device`` must exist on this machine, ``model_config`` must parse as a model config). A number given as an
integer for a floating-point parameter (``known_score_threshold:=1``, as ``ros2 launch`` and ``ros2 param set``
send it) is coerced to the declared type, not refused.

The node keeps the validated values as one immutable snapshot (a read-only mapping) that a successful set
replaces whole, so a frame that reads the snapshot once works on one consistent set of values.
Model and depth parameters take effect at the next configure, ``process_every_frame`` and ``queue_size`` at the
next activate (the node's diagnostics list the values still waiting, ``restart_pending``); thresholds,
``debug_image`` and ``diagnostics_period`` at once. The QoS aliases are read-only, like rclpy's own
``qos_overrides.*`` parameters: both are given at start.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from semseg_core.config import ConfigError, load_config
from semseg_core.device import DeviceError, resolve_device
from semseg_ros.messages import CLASS_ID_FORMATS
from semseg_core.postprocess import OUTPUT_MODES, PLANNER_DEFAULTS, PostprocessError, PostprocessOptions

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


@dataclass(frozen=True)
class Spec:
    default: object
    description: str
    low: object = None
    high: object = None
    choices: tuple = ()
    dynamic: bool = False  # takes effect without reconfiguring
    read_only: bool = False  # given at start only (rclpy refuses a set)


def _postprocess_spec(name: str, description: str, low: Optional[float] = None, high: Optional[float] = None,
                      choices: Tuple[str, ...] = ()) -> Spec:
    return Spec(getattr(PLANNER_DEFAULTS, name), description, low, high, choices, dynamic=True)


SPECS = {
    "model_config": Spec("", "Model config YAML; empty = the config of the weights (or the embedded "
                             "default model)."),
    "weights": Spec("", "Model checkpoint (.pt/.pth); empty = the embedded default tiny model."),
    "allow_random_weights": Spec(False, "Allow a model_config without weights (a randomly initialised model: "
                                        "meaningless detections, for tests only)."),
    "device": Spec("cpu", "Inference device: cpu, cuda or cuda:N. CUDA asked for and absent is an "
                          "error, never a silent CPU fallback."),
    "num_threads": Spec(1, "torch CPU threads for inference (0 = torch's default); 1 is far faster when the CPU is "
                           "shared with busy processes, see BENCHMARKS.md. Takes effect at the next activate.",
                        0, 256),
    "min_size": Spec(0, "Shorter side the image is resized to for the model; 0 = model config "
                        "(INPUT.MIN_SIZE_TEST).", 0, 4096),
    "max_size": Spec(0, "Cap on the longer side after resizing; 0 = model config "
                        "(INPUT.MAX_SIZE_TEST).", 0, 8192),
    # Post-processing: the fields of semseg_core.postprocess.PostprocessOptions, one name each, defaults from its
    # PLANNER_DEFAULTS (README "What a planner gets"); a frame reads them all from one snapshot.
    "output": _postprocess_spec("output", "instance_map: one non-overlapping instance per object, one label and one "
                                          "confidence each (for planners). raw: the authors' output (known and "
                                          "unknown detections of one object side by side, overlapping masks), for "
                                          "comparisons with the paper.", choices=OUTPUT_MODES),
    "known_score_threshold": _postprocess_spec("known_score_threshold", "Minimum score (class probability) of a "
                                                                        "known detection to publish.", 0.0, 1.0),
    "unknown_score_threshold": _postprocess_spec("unknown_score_threshold", "Minimum score (objectness) of an "
                                                                            "unknown detection to publish.", 0.0, 1.0),
    "unknown_distance_threshold": _postprocess_spec(
        "unknown_distance_threshold", "raw: detections whose cosine distance to the nearest prototype exceeds this "
        "are unknown, the others known (-1 = the model's own MODEL.DML.UNK_THR). instance_map: >= 0 also vetoes a "
        "known label beyond this distance (-1 = no veto).", -1.0, 2.0),
    "max_detections": _postprocess_spec("max_detections", "At most this many detections per frame, highest first; "
                                                          "0 = no cap.", 0, 10000),
    "duplicate_iou": _postprocess_spec("duplicate_iou", "instance_map: mask IoU above which a lower-ranked detection "
                                                        "is the same object.", 0.0, 1.0),
    "known_min_probability": _postprocess_spec(
        "known_min_probability", "instance_map: class probability an object needs to be labelled known (else "
        "unknown); the trade-off between unknowns labelled known and knowns kept (README plot).", 0.0, 1.0),
    "min_visible_fraction": _postprocess_spec("min_visible_fraction", "instance_map: share of its mask an instance "
                                              "must keep once higher-ranked instances are painted.", 0.0, 1.0),
    "image_qos.reliability": Spec("best_effort", "Reliability of the image/depth/camera_info "
                                  "subscriptions: the default of each topic's "
                                  "qos_overrides.<topic>.subscription.reliability, which wins when given.",
                                  choices=tuple(RELIABILITY), read_only=True),
    "image_qos.depth": Spec(2, "History depth of the input subscriptions: the default of each topic's "
                               "qos_overrides.<topic>.subscription.depth, which wins when given.", 1, 1000,
                            read_only=True),
    "output_qos.reliability": Spec("reliable", "Reliability of the output publishers: the default of each "
                                   "topic's qos_overrides.<topic>.publisher.reliability, which wins when given.",
                                   choices=tuple(RELIABILITY), read_only=True),
    "output_qos.depth": Spec(5, "History depth of the output publishers: the default of each topic's "
                                "qos_overrides.<topic>.publisher.depth, which wins when given.", 1, 1000,
                             read_only=True),
    "debug_image": Spec(True, "Publish ~/debug_image (rendered only while someone subscribes).",
                        dynamic=True),
    "class_id_format": Spec("id", "ObjectHypothesis.class_id of the detections: 'id' = the decimal id that "
                                  "~/label_info's class_map maps to the name (vision_msgs' convention; "
                                  "unknown = 1000), 'name' = the class name.", choices=CLASS_ID_FORMATS,
                            dynamic=True),
    "process_every_frame": Spec(False, "Process every frame in order (bag evaluation) instead of "
                                       "only the newest one. Takes effect at the next activate."),
    "queue_size": Spec(30, "Frames waiting in every-frame mode; a frame arriving when it is full is dropped "
                           "and counted (frames_dropped_queue_full in /diagnostics). Takes effect at the next "
                           "activate.", 1, 10000),
    "use_depth": Spec(False, "Subscribe to depth + camera_info and publish ~/detections_3d."),
    "sync_tolerance": Spec(0.02, "Slop (s) of the approximate-time match: depth and camera_info are each "
                                 "the message nearest the image's stamp, if within this; otherwise the frame "
                                 "gets no 3D output (counted as depth_unmatched), never older intrinsics.",
                           0.0, 1.0, dynamic=True),
    "depth_min_points": Spec(10, "Valid depth pixels an instance needs for a 3D detection.", 1, 100000,
                             dynamic=True),
    "diagnostics_period": Spec(1.0, "Seconds between /diagnostics messages.", 0.1, 60.0, dynamic=True),
    "autostart": Spec(True, "Configure and activate at start (set false to drive the lifecycle from "
                            "a manager).", read_only=True),
}


# Taking effect at the next activate (the others that are not dynamic: at the next configure).
ACTIVATE_TIME = ("process_every_frame", "queue_size", "num_threads")

POSTPROCESS_NAMES = PostprocessOptions.field_names()  # each is a parameter of the same name (tested)


def postprocess_options(values: Mapping[str, Any]) -> PostprocessOptions:
    """The PostprocessOptions of one parameter snapshot (names are the dataclass fields)."""
    return PostprocessOptions.from_mapping(values)


class ParameterError(ValueError):
    """A parameter value that the node refuses."""


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "integer", float: "double", str: "string"}.get(type(value), type(value).__name__)


_ARTICLE = {bool: "a", int: "an", float: "a", str: "a"}


def _is_double(name: str) -> bool:
    return isinstance(SPECS[name].default, float)


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    if spec.read_only:
        text += " Read-only: given at start."
    elif not spec.dynamic:
        text += " Takes effect at the next configure." if name not in ACTIVATE_TIME else ""
    # Doubles are dynamically typed so that rclpy lets an integer through to the coercion below (a statically
    # typed DOUBLE refuses "1" with "INTEGER, expecting DOUBLE"); the type check is then validate()'s.
    desc = ParameterDescriptor(name=name, description=text, read_only=spec.read_only,
                               dynamic_typing=isinstance(spec.default, float))
    if isinstance(spec.default, bool):
        return desc
    if isinstance(spec.default, int) and spec.low is not None:
        desc.integer_range = [IntegerRange(from_value=spec.low, to_value=spec.high, step=1)]
    elif isinstance(spec.default, float) and spec.low is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=spec.low, to_value=spec.high,
                                                        step=0.0)]
    return desc


def validate(name: str, value: Any) -> Any:
    """The value of parameter ``name`` as the node uses it, coerced to the declared type; ParameterError
    (naming the parameter and the problem) when it is not acceptable."""
    spec = SPECS[name]
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ParameterError(f"parameter '{name}' must be {_ARTICLE[expected]} {_type_name(spec.default)}, "
                             f"got {_type_name(value)} {value!r}")
    if spec.low is not None and not (spec.low <= value <= spec.high):  # NaN fails this too
        raise ParameterError(f"parameter '{name}' = {value} is outside [{spec.low}, {spec.high}]")
    if spec.choices and value not in spec.choices:
        raise ParameterError(f"parameter '{name}' = {value!r}; expected one of "
                             f"{', '.join(spec.choices)}")
    if name in POSTPROCESS_NAMES:
        try:  # the dataclass holds the rule (e.g. unknown_distance_threshold is -1 or >= 0)
            PostprocessOptions(**{name: value})
        except PostprocessError as error:
            raise ParameterError(f"parameter '{name}': {error}") from None
    if name == "device":
        try:
            resolve_device(value, what="parameter 'device' =")
        except DeviceError as error:
            raise ParameterError(str(error)) from None
    if name in ("weights", "model_config") and value and not os.path.isfile(value):
        raise ParameterError(f"parameter '{name}': file not found: {value}")
    if name == "model_config" and value:
        try:
            load_config(value)
        except ConfigError as error:
            raise ParameterError(f"parameter 'model_config' = {value!r} is not a model config: {error}") from None
    return value


def coerce_types(parameter_list: Sequence[Parameter]) -> List[Parameter]:
    """rclpy Parameters with an integer given for a floating-point parameter turned into doubles (the node's
    pre-set callback, where the distribution has one: the stored value then has the declared type)."""
    return [Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            if p.name in SPECS and _is_double(p.name) and p.type_ == Parameter.Type.INTEGER else p
            for p in parameter_list]


def declare_all(node: Node) -> Mapping[str, Any]:
    """Declare every parameter on ``node`` and return the validated values as a snapshot.

    rclpy itself rejects out-of-range overrides at declaration; that error is turned into a
    ParameterError naming the parameter. An integer given for a double is stored as the double.
    """
    values = {}
    for name, spec in SPECS.items():
        try:
            parameter = node.declare_parameter(name, spec.default, descriptor(name, spec))
        except Exception as error:  # InvalidParameterValueException, InvalidParameterTypeException
            raise ParameterError(f"parameter '{name}': {error}") from error
        values[name] = validate(name, parameter.value)
        if parameter.type_ == Parameter.Type.INTEGER and _is_double(name):
            node.set_parameters([Parameter(name, Parameter.Type.DOUBLE, values[name])])
    return MappingProxyType(values)


def updated(snapshot: Mapping[str, Any], parameter_list: Sequence[Parameter]) -> Mapping[str, Any]:
    """A new snapshot: ``snapshot`` with the node's parameters in ``parameter_list`` validated and applied
    (others, e.g. rclpy's qos_overrides.*, are not the snapshot's); ParameterError if any is refused, and then
    nothing changes."""
    values = dict(snapshot)
    for parameter in parameter_list:
        if parameter.name in SPECS:
            values[parameter.name] = validate(parameter.name, parameter.value)
    return MappingProxyType(values)


def pending_restart(applied: Mapping[str, Any], snapshot: Mapping[str, Any]) -> List[str]:
    """Names of parameters whose value in ``snapshot`` differs from the one the node runs with (``applied``:
    the values at the last configure/activate) and waits for a configure or activate."""
    return sorted(name for name, spec in SPECS.items()
                  if not spec.dynamic and not spec.read_only and name in applied and applied[name] != snapshot[name])


def qos_profile(values: Mapping[str, Any], prefix: str) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values[f"{prefix}.depth"],
                      reliability=RELIABILITY[values[f"{prefix}.reliability"]])
