"""rosbag2 tools for evaluating the perception node on recorded data (no ROS bag tooling needed).

- `make_bag`: COCO image set -> camera bag (+ ground truth keyed by stamp)
- `replay`: bag -> live node -> recorded outputs bag
- `score`: recorded outputs + ground truth -> open-set metrics, latency, report folder
"""
