"""One side of the two-process DDS test (run as a script by test_dds_transport.py).

    python dds_peer.py send    FRAMES RATE_HZ   publish FRAMES 640x480 rgb8 images + Detection2DArrays
    python dds_peer.py receive FRAMES TIMEOUT_S  count what arrives, print one JSON line, exit

Both use best-effort QoS. Each image carries its frame number in header.frame_id and in its first
pixel bytes; each Detection2DArray carries one detection whose id is the frame number, so the receiver
can check that every frame arrived intact, not just that some did.
"""

import json
import sys
import time

import semseg_ros  # noqa: F401  (fills in the ROS environment, including the DDS profile)
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose

WIDTH, HEIGHT = 640, 480
QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=30)


def make_frame(index):
    pixels = bytearray(WIDTH * HEIGHT * 3)
    pixels[0:4] = index.to_bytes(4, "little")
    pixels[-1] = index % 251
    image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0, step=WIDTH * 3)
    image.data = bytes(pixels)
    image.header.frame_id = str(index)
    detection = Detection2D(id=str(index), bbox=BoundingBox2D(size_x=10.0, size_y=20.0))
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = "unknown"
    hypothesis.hypothesis.score = 0.5
    detection.results = [hypothesis]
    detections = Detection2DArray(detections=[detection])
    detections.header.frame_id = str(index)
    return image, detections


def send(frames, rate_hz):
    node = rclpy.create_node("dds_peer_sender")
    image_pub = node.create_publisher(Image, "semseg_test/image", QOS)
    det_pub = node.create_publisher(Detection2DArray, "semseg_test/detections", QOS)
    deadline = time.monotonic() + 20.0
    while image_pub.get_subscription_count() < 1 or det_pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            print("sender: no subscriber discovered within 20 s", file=sys.stderr)
            return 2
        time.sleep(0.05)
    time.sleep(0.5)  # the subscriber's reader matches our writer a moment after we see it
    period = 1.0 / rate_hz
    start = time.monotonic()
    for index in range(frames):
        image, detections = make_frame(index)
        stamp = node.get_clock().now().to_msg()
        image.header.stamp = stamp
        detections.header.stamp = stamp
        image_pub.publish(image)
        det_pub.publish(detections)
        time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))
    # stay alive until the receiver has left (its last samples may still be in flight)
    deadline = time.monotonic() + 20.0
    while image_pub.get_subscription_count() > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    node.destroy_node()
    return 0


def receive(frames, timeout_s):
    node = rclpy.create_node("dds_peer_receiver")
    images, detections, latencies_ms, problems = set(), set(), [], []

    def on_image(msg):
        index = int(msg.header.frame_id)
        data = memoryview(msg.data)
        if (msg.width, msg.height, msg.encoding, len(data)) != (WIDTH, HEIGHT, "rgb8", WIDTH * HEIGHT * 3):
            problems.append(f"frame {index}: wrong shape {msg.width}x{msg.height} {msg.encoding} {len(data)}")
        elif int.from_bytes(bytes(data[0:4]), "little") != index or data[-1] != index % 251:
            problems.append(f"frame {index}: pixel content does not match")
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies_ms.append((node.get_clock().now().nanoseconds * 1e-9 - sent) * 1e3)
        images.add(index)

    def on_detections(msg):
        index = int(msg.header.frame_id)
        if [d.id for d in msg.detections] != [str(index)] or msg.detections[0].results[0].hypothesis.class_id != "unknown":
            problems.append(f"detections {index}: content does not match")
        detections.add(index)

    node.create_subscription(Image, "semseg_test/image", on_image, QOS)
    node.create_subscription(Detection2DArray, "semseg_test/detections", on_detections, QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    while (len(images) < frames or len(detections) < frames) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    latencies_ms.sort()
    print(json.dumps({
        "images": sorted(images), "detections": sorted(detections), "problems": problems[:10],
        "latency_ms_median": latencies_ms[len(latencies_ms) // 2] if latencies_ms else None,
        "latency_ms_max": latencies_ms[-1] if latencies_ms else None,
    }))
    executor.shutdown()
    node.destroy_node()
    return 0


def main():
    role, frames, value = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rclpy.init(args=[])
    try:
        return send(frames, value) if role == "send" else receive(frames, value)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
