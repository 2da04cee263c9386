"""3D centroid/extent from a mask's depth pixels, with holes and outliers."""
import numpy as np
import pytest

from sensor_msgs.msg import CameraInfo

from semseg_ros.depth import Intrinsics, instance_boxes_3d

FX = FY = 500.0
CX, CY = 319.5, 239.5
CAMERA = Intrinsics(FX, FY, CX, CY, 640, 480)


def _scene(distance=2.0, box=(300, 200, 380, 260)):
    """A fronto-parallel box face at ``distance`` metres in front of a wall at 4 m."""
    depth = np.full((480, 640), 4.0, np.float32)
    label = np.zeros((480, 640), np.uint16)
    x0, y0, x1, y1 = box
    depth[y0:y1, x0:x1] = distance
    label[y0:y1, x0:x1] = 1
    return label, depth


def _expected_center(box, distance):
    x0, y0, x1, y1 = box
    u, v = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0
    return np.array([(u - CX) * distance / FX, (v - CY) * distance / FY, distance])


def test_known_box_at_known_distance():
    box = (300, 200, 380, 260)
    label, depth = _scene(2.0, box)
    (result,) = instance_boxes_3d(label, depth, CAMERA)
    np.testing.assert_allclose(result.center, _expected_center(box, 2.0), atol=0.01)
    width_m = (box[2] - box[0]) * 2.0 / FX
    assert result.size[0] == pytest.approx(width_m * 0.9, rel=0.05)  # 5-95 percentile span
    assert result.size[2] == pytest.approx(0.0, abs=1e-6)
    assert result.instance_id == 1 and result.num_points == 80 * 60


def test_holes_and_outliers_do_not_move_the_centroid():
    box = (100, 100, 200, 180)
    label, depth = _scene(1.5, box)
    rng = np.random.default_rng(1)
    ys, xs = np.nonzero(label)
    pick = rng.choice(ys.size, 2000, replace=False)
    depth[ys[pick[:1000]], xs[pick[:1000]]] = 0.0       # holes
    depth[ys[pick[1000:1500]], xs[pick[1000:1500]]] = np.nan
    depth[ys[pick[1500:1800]], xs[pick[1500:1800]]] = 9.0  # background seen through the mask
    (result,) = instance_boxes_3d(label, depth, CAMERA)
    np.testing.assert_allclose(result.center, _expected_center(box, 1.5), atol=0.02)
    assert result.num_points == 8000 - 1500


def test_several_instances_and_too_few_points():
    label, depth = _scene(2.0, (300, 200, 380, 260))
    label[10:12, 10:12] = 2       # 4 pixels only: below min_points
    label[400:440, 500:560] = 3
    depth[400:440, 500:560] = 3.0
    results = instance_boxes_3d(label, depth, CAMERA, min_points=10)
    assert [r.instance_id for r in results] == [1, 3]
    assert results[1].center[2] == pytest.approx(3.0)


def test_depth_at_half_resolution_uses_scaled_intrinsics():
    box = (300, 200, 380, 260)
    label, depth = _scene(2.0, box)
    half = depth[::2, ::2].copy()
    (result,) = instance_boxes_3d(label, half, CAMERA)
    np.testing.assert_allclose(result.center, _expected_center(box, 2.0), atol=0.02)


def test_intrinsics_from_camera_info():
    info = CameraInfo(width=640, height=480)
    info.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    assert Intrinsics.from_camera_info(info) == CAMERA
    with pytest.raises(ValueError, match="focal length"):
        Intrinsics.from_camera_info(CameraInfo())


def _info(k=(FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0), width=640, height=480):
    info = CameraInfo(width=width, height=height)
    info.k = list(k)
    return info


@pytest.mark.parametrize("info, message", [
    (_info(k=(float("nan"), 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)), "non-finite"),
    (_info(k=(FX, 0.0, float("inf"), 0.0, FY, CY, 0.0, 0.0, 1.0)), "non-finite"),
    (_info(k=(FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, float("-inf"))), "non-finite"),
    (_info(k=(1e-300, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)), "field of view"),   # 180 degrees
    (_info(k=(1e300, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)), "field of view"),    # 0 degrees
    (_info(k=(FX, 0.0, CX, 0.0, 5.0, CY, 0.0, 0.0, 1.0)), "vertical field of view"),
    (_info(k=(-FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)), "focal length"),
    (_info(k=(FX, 0.0, 700.0, 0.0, FY, CY, 0.0, 0.0, 1.0)), "principal point"),
    (_info(width=0, height=0), "not a camera resolution"),
    (_info(width=100000, height=480), "not a camera resolution"),
])
def test_implausible_camera_info_is_refused(info, message):
    with pytest.raises(ValueError, match=message):
        Intrinsics.from_camera_info(info)


def test_field_of_view_limits():
    # fx for a 640 px wide image at exactly 170 and 1 degrees: 320 / tan(85 deg), 320 / tan(0.5 deg)
    wide, narrow = 320.0 / np.tan(np.radians(85.0)), 320.0 / np.tan(np.radians(0.5))
    for fx in (wide * 1.001, narrow * 0.999):
        Intrinsics.from_camera_info(_info(k=(fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)))
    for fx in (wide * 0.99, narrow * 1.01):
        with pytest.raises(ValueError, match="field of view"):
            Intrinsics.from_camera_info(_info(k=(fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)))


def test_a_camera_info_of_another_aspect_ratio_is_refused():
    # a 1x1 camera_info for a 640x480 depth image: scaling it would give finite nonsense (issue 17)
    tiny = Intrinsics(fx=0.5, fy=0.5, cx=0.5, cy=0.5, width=1, height=1)
    label, depth = _scene(2.0)
    with pytest.raises(ValueError, match="aspect ratio"):
        instance_boxes_3d(label, depth, tiny)
    label_wide = np.zeros((100, 640), np.uint16)             # a colour image of another view than the depth
    with pytest.raises(ValueError, match="aspect ratio"):
        instance_boxes_3d(label_wide, depth, CAMERA)
