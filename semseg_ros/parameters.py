"""The node's parameters: one table with defaults, descriptions, ranges and validation.

Values given at start that are out of range or invalid make the node refuse to start with a message
naming the parameter; at run time such a ``set_parameters`` call is refused with the same message.
Model and QoS parameters take effect at the next configure (lifecycle cleanup + configure, or restart);
thresholds and ``debug_image`` take effect on the next frame.
"""
import os
from dataclasses import dataclass

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from semseg_core.device import DeviceError, parse_device
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


def _postprocess_spec(name, description, low=None, high=None, choices=()):
    return Spec(getattr(PLANNER_DEFAULTS, name), description, low, high, choices, dynamic=True)


SPECS = {
    "model_config": Spec("", "Model config YAML; empty = the config of the weights (or the embedded "
                             "default model)."),
    "weights": Spec("", "Model checkpoint (.pt/.pth); empty = the embedded default tiny model."),
    "device": Spec("cpu", "Inference device: cpu, cuda or cuda:N. CUDA asked for and absent is an "
                          "error, never a silent CPU fallback."),
    "num_threads": Spec(1, "torch CPU threads for inference (0 = torch's default); 1 is far faster when the CPU is shared with busy processes, see BENCHMARKS.md.", 0, 256),
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
                                  "subscriptions.", choices=tuple(RELIABILITY)),
    "image_qos.depth": Spec(2, "History depth of the input subscriptions.", 1, 1000),
    "output_qos.reliability": Spec("reliable", "Reliability of the output publishers.",
                                   choices=tuple(RELIABILITY)),
    "output_qos.depth": Spec(5, "History depth of the output publishers.", 1, 1000),
    "debug_image": Spec(True, "Publish ~/debug_image (rendered only while someone subscribes).",
                        dynamic=True),
    "process_every_frame": Spec(False, "Process every frame in order (bag evaluation) instead of "
                                       "only the newest one."),
    "queue_size": Spec(30, "Frames waiting in every-frame mode before the subscription is blocked.",
                       1, 10000),
    "use_depth": Spec(False, "Subscribe to depth + camera_info and publish ~/detections_3d."),
    "sync_tolerance": Spec(0.02, "Largest stamp difference (s) between image and depth/camera_info "
                                 "considered the same instant.", 0.0, 1.0),
    "depth_min_points": Spec(10, "Valid depth pixels an instance needs for a 3D detection.", 1, 100000),
    "diagnostics_period": Spec(1.0, "Seconds between /diagnostics messages.", 0.1, 60.0),
    "autostart": Spec(True, "Configure and activate at start (set false to drive the lifecycle from "
                            "a manager)."),
}


POSTPROCESS_NAMES = PostprocessOptions.field_names()  # each is a parameter of the same name (tested)


def postprocess_options(values):
    """The PostprocessOptions of one parameter snapshot (names are the dataclass fields)."""
    return PostprocessOptions.from_mapping(values)


class ParameterError(ValueError):
    """A parameter value that the node refuses."""


def _type_name(value):
    return {bool: "bool", int: "integer", float: "double", str: "string"}[type(value)]


def descriptor(name, spec):
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    if not spec.dynamic:
        text += " Takes effect at the next configure."
    desc = ParameterDescriptor(name=name, description=text)
    if isinstance(spec.default, bool):
        return desc
    if isinstance(spec.default, int) and spec.low is not None:
        desc.integer_range = [IntegerRange(from_value=spec.low, to_value=spec.high, step=1)]
    elif isinstance(spec.default, float) and spec.low is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=spec.low, to_value=spec.high,
                                                        step=0.0)]
    return desc


def validate(name, value):
    """Raise ParameterError when ``value`` is not acceptable for parameter ``name``."""
    spec = SPECS[name]
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ParameterError(f"parameter '{name}' must be a {_type_name(spec.default)}, "
                             f"got {value!r}")
    if spec.low is not None and not (spec.low <= value <= spec.high):
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
            parse_device(value, what="parameter 'device' =")
        except DeviceError as error:
            raise ParameterError(str(error)) from None
    if name in ("weights", "model_config") and value and not os.path.isfile(value):
        raise ParameterError(f"parameter '{name}': file not found: {value}")
    return value


def declare_all(node):
    """Declare every parameter on ``node`` and return the validated values as a dict.

    rclpy itself rejects out-of-range overrides at declaration; that error is turned into a
    ParameterError naming the parameter.
    """
    values = {}
    for name, spec in SPECS.items():
        try:
            parameter = node.declare_parameter(name, spec.default, descriptor(name, spec))
        except Exception as error:  # InvalidParameterValueException, InvalidParameterTypeException
            raise ParameterError(f"parameter '{name}': {error}") from error
        values[name] = validate(name, parameter.value)
    return values


def on_set_callback(values):
    """A set-parameters callback that validates and, when all are valid, updates ``values``."""
    def callback(parameters):
        updates = {}
        for parameter in parameters:
            if parameter.name not in SPECS:
                continue
            try:
                updates[parameter.name] = validate(parameter.name, parameter.value)
            except ParameterError as error:
                return SetParametersResult(successful=False, reason=str(error))
        values.update(updates)
        return SetParametersResult(successful=True)
    return callback


def qos_profile(values, prefix):
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values[f"{prefix}.depth"],
                      reliability=RELIABILITY[values[f"{prefix}.reliability"]])
