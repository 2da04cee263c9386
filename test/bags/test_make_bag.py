"""semseg-make-bag: bags read back identically by rosbags and by mcap's own reader, version-8 metadata,
ground truth keyed by stamp, and clear errors for broken bags."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader

from semseg_core.data.synthetic import generate_dataset
from semseg_ros.bag_tools import make_bag as make_bag_module
from semseg_ros.bag_tools.bag_io import BagError, connections_for, iter_messages, open_reader
from semseg_ros.bag_tools.make_bag import load_groundtruth, make_bag
from semseg_ros.bag_tools.typestore import bag_typestore

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return generate_dataset(str(out), NUM_IMAGES, seed=11, image_size=64, split="test", progress=False)


def read_all(bag):
    with open_reader(bag) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in iter_messages(reader)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_frames_match_images_and_groundtruth(scenes, tmp_path, storage):
    bag = tmp_path / "cam"
    summary = make_bag(scenes, bag, rate=5.0, storage=storage, progress=False)
    assert summary.frames == NUM_IMAGES

    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 8
    assert metadata["storage_identifier"] == storage
    assert isinstance(metadata["custom_data"], dict)

    gt = load_groundtruth(bag)
    coco = json.load(open(scenes))
    stamps = [f["stamp_ns"] for f in gt["frames"]]
    assert np.all(np.diff(stamps) == 200_000_000)  # 5 Hz
    assert [f["image_id"] for f in gt["frames"]] == sorted(im["id"] for im in coco["images"])
    assert len(gt["coco"]["annotations"]) == len(coco["annotations"])
    assert gt["known_class_names"] == coco["info"]["known_families"]

    store = bag_typestore()
    messages = read_all(bag)
    images = [(t, raw) for topic, t, raw in messages if topic == "/camera/color/image_raw"]
    infos = [raw for topic, _, raw in messages if topic == "/camera/color/camera_info"]
    assert len(images) == len(infos) == NUM_IMAGES
    for (log_time, raw), frame in zip(images, gt["frames"]):
        msg = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp == log_time == frame["stamp_ns"]
        assert msg.encoding == "rgb8" and msg.step == msg.width * 3
        png = Path(scenes).parent / "images" / frame["file_name"]
        expected = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(msg.data.reshape(msg.height, msg.width, 3), expected)


def test_mcap_reader_sees_identical_messages(scenes, tmp_path):
    bag = tmp_path / "cam"
    make_bag(scenes, bag, storage="mcap", progress=False)
    via_rosbags = read_all(bag)
    (mcap_file,) = list(bag.glob("*.mcap"))
    with open(mcap_file, "rb") as f:
        via_mcap = [(channel.topic, message.log_time, bytes(message.data), schema.name)
                    for schema, channel, message in make_reader(f).iter_messages(log_time_order=True)]
    assert [m[:3] for m in via_mcap] == via_rosbags
    assert {m[3] for m in via_mcap} == {"sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"}


def test_same_input_gives_identical_bag_content(scenes, tmp_path):
    make_bag(scenes, tmp_path / "a", progress=False)
    make_bag(scenes, tmp_path / "b", progress=False)
    assert read_all(tmp_path / "a") == read_all(tmp_path / "b")


def test_missing_storage_file_is_named(scenes, tmp_path):
    bag = tmp_path / "cam"
    make_bag(scenes, bag, progress=False)
    (bag / "cam.db3").unlink()
    with pytest.raises(BagError, match="cam.db3"):
        read_all(bag)


@pytest.mark.parametrize("storage,suffix", [("sqlite3", ".db3"), ("mcap", ".mcap")])
def test_corrupt_storage_file_is_named(scenes, tmp_path, storage, suffix):
    bag = tmp_path / "cam"
    make_bag(scenes, bag, storage=storage, progress=False)
    data_file = bag / ("cam" + suffix)
    data = bytearray(data_file.read_bytes())
    data[len(data) // 4:] = b"\x5a" * (len(data) - len(data) // 4)  # keep the header, trash the rest
    data_file.write_bytes(bytes(data))
    with pytest.raises(BagError, match=f"cam{suffix}"):
        read_all(bag)


def test_missing_bag_and_missing_metadata(tmp_path, scenes):
    with pytest.raises(BagError, match="does not exist"):
        read_all(tmp_path / "nope")
    bag = tmp_path / "cam"
    make_bag(scenes, bag, progress=False)
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="metadata.yaml"):
        read_all(bag)


def test_bag_without_the_topic_names_it(scenes, tmp_path):
    bag = tmp_path / "cam"
    make_bag(scenes, bag, topic="/other/image", camera_info_topic=None, progress=False)
    with open_reader(bag) as reader, pytest.raises(BagError, match="'/camera/image_raw'.*/other/image"):
        connections_for(reader, ["/camera/image_raw"])


def test_cli_help_and_errors(scenes, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_bag_module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--storage" in capsys.readouterr().out
    assert make_bag_module.main(["--coco", str(tmp_path / "none.json"), "--out", str(tmp_path / "b")]) == 2
    assert "none.json" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "b", ignore_errors=True)
    assert make_bag_module.main(["--coco", scenes, "--out", str(tmp_path / "b"), "--quiet", "--max-frames", "2",
                                 "--storage", "mcap"]) == 0
    assert "wrote 2 frames" in capsys.readouterr().out
    assert make_bag_module.main(["--coco", scenes, "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "exists already" in capsys.readouterr().err
