"""Project-wide constants shared by the model, the evaluator, the predictor and the ROS node."""

# Class id of an unknown detection: the authors' value, also the COCO category_id written for
# unknown detections in result files.
UNKNOWN_ID = 1000
UNKNOWN_NAME = "unknown"
