"""One tabletop scene: meshes dropped onto a textured table by the Bullet physics engine, rendered on the CPU.

pybullet runs headless (DIRECT mode) and renders with its TinyRenderer, a software rasteriser that needs no GL,
display or GPU. Everything random (which objects, their drop poses and colours, the table and floor textures,
the light and the camera pose) comes from one numpy Generator, and each scene uses a fresh physics client, so a
scene is a pure function of its seed. Masks come from the renderer's segmentation buffer (the visible part of
each object, occlusion-correct); depth is the renderer's z-buffer turned into metres along the optical axis.
"""

import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import pybullet

from semseg_core.data.synthetic_textures import background, random_color
from semseg_core.data.tabletop_assets import MeshAsset, MeshGeometry, mesh_geometry
from semseg_core.data.tabletop_camera import (
    CameraIntrinsics,
    gl_list,
    linear_depth,
    look_at,
    quaternion_to_rotation,
    rotation_to_quaternion,
    view_matrix,
)

TABLE_HALF_SIZE_M = (0.5, 0.4)    # the table top spans x in [-0.5, 0.5], y in [-0.4, 0.4]; its top is z = 0
TABLE_THICKNESS_M = 0.04
FLOOR_Z_M = -0.75
NEAR_M, FAR_M = 0.05, 6.0
TEXTURE_SIZE = 256
PHYSICS_HZ = 240
MAX_SETTLE_S = 3.0
SETTLED_SPEED_M_S = 0.005         # every object slower than this (and turning slower than 0.05 rad/s) = at rest
MIN_VISIBLE_PIXELS = 150          # objects showing fewer pixels get no annotation


@dataclass(frozen=True)
class SceneOptions:
    """How scenes are drawn (all ranges are sampled uniformly per scene).

    Args:
        min_objects: fewest objects dropped per scene.
        max_objects: most objects dropped per scene (clutter density).
        openness: expected share of unknown objects among those dropped (0 for training scenes).
        drop_radius_m: objects are dropped within this distance of the table centre (smaller = denser piles).
        camera_distance_m: (min, max) distance from the camera to the point it looks at.
        camera_elevation_deg: (min, max) angle of the viewing direction above the table plane.
        amodal: also render each object's full (unoccluded) mask; one more render per object.
    """
    min_objects: int = 3
    max_objects: int = 8
    openness: float = 0.0
    drop_radius_m: float = 0.18
    camera_distance_m: Sequence[float] = (0.55, 0.9)
    camera_elevation_deg: Sequence[float] = (40.0, 80.0)
    amodal: bool = False

    def __post_init__(self):
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 0.0 <= self.openness <= 1.0:
            raise ValueError(f"openness must be in [0, 1], got {self.openness}")
        if not 0.0 < self.drop_radius_m <= min(TABLE_HALF_SIZE_M):
            raise ValueError(f"drop_radius_m must be in (0, {min(TABLE_HALF_SIZE_M)}], got {self.drop_radius_m}")
        low, high = self.camera_distance_m
        if not 0.15 <= low <= high:
            raise ValueError(f"camera_distance_m must be (min, max) with 0.15 <= min <= max, got {low}, {high}")
        low, high = self.camera_elevation_deg
        if not 10.0 <= low <= high <= 89.0:
            raise ValueError(f"camera_elevation_deg must be (min, max) within [10, 89], got {low}, {high}")


@dataclass
class SceneObject:
    """One object of a rendered scene; pose and boxes are in the camera optical frame (metres).

    ``position`` is the centre of the object's mesh box (its own axes), ``orientation`` the quaternion (x, y, z, w)
    of those axes, ``size`` the box's side lengths; ``camera_box_center``/``camera_box_size`` bound its posed
    vertices along the camera axes (what a depth-based 3D detector reports).
    """
    asset: MeshAsset
    visible_mask: np.ndarray                 # bool H x W
    amodal_mask: Optional[np.ndarray]        # bool H x W, or None
    position: np.ndarray
    orientation: np.ndarray
    size: np.ndarray
    camera_box_center: np.ndarray
    camera_box_size: np.ndarray


@dataclass
class TabletopScene:
    """A rendered scene: RGB, depth in metres (0 = no surface), the camera, and the annotated objects."""
    rgb: np.ndarray                          # uint8 H x W x 3
    depth_m: np.ndarray                      # float32 H x W
    intrinsics: CameraIntrinsics
    world_from_camera: np.ndarray            # 4x4, optical frame
    objects: List[SceneObject] = field(default_factory=list)
    dropped: int = 0                         # objects dropped (some may fall off the table or hide)


def _texture(client: int, rng: np.random.Generator, folder: str, name: str) -> int:
    image = np.clip(background(rng, TEXTURE_SIZE, TEXTURE_SIZE) + 0.5, 0, 255).astype(np.uint8)
    path = os.path.join(folder, f"{name}.png")
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write the texture {path}")
    return pybullet.loadTexture(path, physicsClientId=client)


def _add_static_box(client: int, half_extents, position, texture: int) -> int:
    visual = pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=half_extents, physicsClientId=client)
    collision = pybullet.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half_extents, physicsClientId=client)
    body = pybullet.createMultiBody(0.0, collision, visual, position, physicsClientId=client)
    pybullet.changeVisualShape(body, -1, textureUniqueId=texture, rgbaColor=[1, 1, 1, 1], physicsClientId=client)
    return body


def _random_quaternion(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


def _add_object(client: int, asset: MeshAsset, geometry: MeshGeometry, rng: np.random.Generator,
                position, orientation) -> int:
    # The body frame is put at the centre of the mesh box, so the body pose is the box pose.
    offset = [float(-c) for c in geometry.center]
    scale = [asset.scale] * 3
    color = [1.0, 1.0, 1.0, 1.0] if asset.textured else [*(random_color(rng) / 255.0), 1.0]
    visual = pybullet.createVisualShape(pybullet.GEOM_MESH, fileName=asset.path, meshScale=scale,
                                        visualFramePosition=offset, rgbaColor=color, physicsClientId=client)
    collision = pybullet.createCollisionShape(pybullet.GEOM_MESH, fileName=asset.path, meshScale=scale,
                                              collisionFramePosition=offset, physicsClientId=client)
    if visual < 0 or collision < 0:
        raise RuntimeError(f"pybullet could not load the mesh {asset.path}")
    mass = float(rng.uniform(0.05, 0.4))
    body = pybullet.createMultiBody(mass, collision, visual, list(position), list(orientation),
                                    physicsClientId=client)
    pybullet.changeDynamics(body, -1, lateralFriction=float(rng.uniform(0.4, 0.9)), physicsClientId=client)
    return body


def _settle(client: int, bodies: Sequence[int]) -> None:
    """Step the physics until every object rests (or MAX_SETTLE_S of simulated time has passed)."""
    check_every = PHYSICS_HZ // 8
    for step in range(int(MAX_SETTLE_S * PHYSICS_HZ)):
        pybullet.stepSimulation(physicsClientId=client)
        if step % check_every == check_every - 1:
            speeds = [pybullet.getBaseVelocity(b, physicsClientId=client) for b in bodies]
            if all(np.linalg.norm(v) < SETTLED_SPEED_M_S and np.linalg.norm(w) < 0.05 for v, w in speeds):
                return


def _camera_pose(rng: np.random.Generator, options: SceneOptions) -> np.ndarray:
    distance = rng.uniform(*options.camera_distance_m)
    elevation = np.deg2rad(rng.uniform(*options.camera_elevation_deg))
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    target = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0.0])
    eye = target + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return look_at(eye, target)


def _light(rng: np.random.Generator) -> Dict:
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.deg2rad(30), np.deg2rad(85))
    direction = [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    warmth = rng.uniform(-0.1, 0.1)
    return {
        "lightDirection": [float(v) for v in direction],
        "lightColor": [1.0, float(1.0 - abs(warmth) / 2), float(1.0 - warmth)],
        "lightAmbientCoeff": float(rng.uniform(0.35, 0.7)),
        "lightDiffuseCoeff": float(rng.uniform(0.3, 0.6)),
        "lightSpecularCoeff": float(rng.uniform(0.0, 0.3)),
        "shadow": int(rng.random() < 0.5),
    }


def _render(client: int, intrinsics: CameraIntrinsics, view: List[float], projection: List[float],
            light: Dict, segmentation_only: bool = False):
    _, _, rgba, z_buffer, segmentation = pybullet.getCameraImage(
        intrinsics.width, intrinsics.height, view, projection, renderer=pybullet.ER_TINY_RENDERER,
        physicsClientId=client, **({} if segmentation_only else light))
    shape = (intrinsics.height, intrinsics.width)
    rgb = np.reshape(np.asarray(rgba, dtype=np.uint8), shape + (4,))[:, :, :3]
    return rgb, np.reshape(np.asarray(z_buffer, dtype=np.float32), shape), \
        np.reshape(np.asarray(segmentation, dtype=np.int32), shape)


def _object_record(client: int, body: int, asset: MeshAsset, geometry: MeshGeometry, camera_from_world: np.ndarray,
                   visible: np.ndarray, amodal: Optional[np.ndarray]) -> SceneObject:
    position, quaternion = pybullet.getBasePositionAndOrientation(body, physicsClientId=client)
    world_from_object = np.eye(4)
    world_from_object[:3, :3] = quaternion_to_rotation(quaternion)
    world_from_object[:3, 3] = position
    camera_from_object = camera_from_world @ world_from_object
    # Vertices relative to the box centre (the body frame), posed in the camera frame.
    local = geometry.vertices - geometry.center
    posed = local @ camera_from_object[:3, :3].T + camera_from_object[:3, 3]
    low, high = posed.min(axis=0), posed.max(axis=0)
    return SceneObject(asset=asset, visible_mask=visible, amodal_mask=amodal,
                       position=camera_from_object[:3, 3].copy(),
                       orientation=rotation_to_quaternion(camera_from_object[:3, :3]),
                       size=geometry.size.copy(), camera_box_center=(low + high) / 2.0, camera_box_size=high - low)


def render_tabletop_scene(rng: np.random.Generator, known: Sequence[MeshAsset], unknown: Sequence[MeshAsset],
                          intrinsics: CameraIntrinsics, options: SceneOptions) -> TabletopScene:
    """Drop objects onto the table, let them settle and render the scene from a random camera pose."""
    if not known and options.openness < 1.0:
        raise ValueError("openness < 1 needs at least one known mesh")
    if not unknown and options.openness > 0.0:
        raise ValueError("openness > 0 needs at least one unknown mesh")
    count = int(rng.integers(options.min_objects, options.max_objects + 1))
    # Stochastic rounding keeps the expected unknown share equal to `openness` even for few objects.
    n_unknown = int(np.floor(options.openness * count + rng.random()))
    is_known = np.array([False] * n_unknown + [True] * (count - n_unknown))
    rng.shuffle(is_known)
    chosen = [known[int(rng.integers(len(known)))] if k else unknown[int(rng.integers(len(unknown)))]
              for k in is_known]

    client = pybullet.connect(pybullet.DIRECT)
    try:
        with tempfile.TemporaryDirectory(prefix="semseg_tabletop_") as folder:
            pybullet.setGravity(0, 0, -9.81, physicsClientId=client)
            pybullet.setPhysicsEngineParameter(fixedTimeStep=1.0 / PHYSICS_HZ, physicsClientId=client)
            half_x, half_y = TABLE_HALF_SIZE_M
            _add_static_box(client, [half_x, half_y, TABLE_THICKNESS_M / 2], [0, 0, -TABLE_THICKNESS_M / 2],
                            _texture(client, rng, folder, "table"))
            _add_static_box(client, [3.0, 3.0, 0.01], [0, 0, FLOOR_Z_M - 0.01], _texture(client, rng, folder, "floor"))

            geometries, bodies = [], []
            for index, asset in enumerate(chosen):
                geometry = mesh_geometry(asset)
                radius = options.drop_radius_m * np.sqrt(rng.random())
                angle = rng.uniform(0, 2 * np.pi)
                height = 0.5 * float(geometry.size.max()) + 0.02 + 0.08 * index  # dropped one above another
                position = [radius * np.cos(angle), radius * np.sin(angle), height]
                bodies.append(_add_object(client, asset, geometry, rng, position, _random_quaternion(rng)))
                geometries.append(geometry)
            _settle(client, bodies)

            world_from_camera = _camera_pose(rng, options)
            camera_from_world = np.linalg.inv(world_from_camera)
            view = gl_list(view_matrix(world_from_camera))
            projection = gl_list(intrinsics.projection_matrix(NEAR_M, FAR_M))
            light = _light(rng)
            rgb, z_buffer, segmentation = _render(client, intrinsics, view, projection, light)
            depth_m = linear_depth(z_buffer, NEAR_M, FAR_M)

            objects = []
            for body, asset, geometry in zip(bodies, chosen, geometries):
                z = pybullet.getBasePositionAndOrientation(body, physicsClientId=client)[0][2]
                visible = segmentation == body
                if z < -TABLE_THICKNESS_M or visible.sum() < MIN_VISIBLE_PIXELS:
                    continue  # fell off the table, or (nearly) hidden
                amodal = _amodal_mask(client, body, bodies, intrinsics, view, projection) if options.amodal else None
                objects.append(_object_record(client, body, asset, geometry, camera_from_world, visible, amodal))
    finally:
        pybullet.disconnect(physicsClientId=client)
    return TabletopScene(rgb=np.ascontiguousarray(rgb), depth_m=depth_m, intrinsics=intrinsics,
                         world_from_camera=world_from_camera, objects=objects, dropped=count)


def _amodal_mask(client: int, body: int, bodies: Sequence[int], intrinsics: CameraIntrinsics, view: List[float],
                 projection: List[float]) -> np.ndarray:
    """The object's full silhouette: render it with every other object moved out of sight, then put them back."""
    others = [b for b in bodies if b != body]
    poses = [pybullet.getBasePositionAndOrientation(b, physicsClientId=client) for b in others]
    try:
        for i, b in enumerate(others):
            pybullet.resetBasePositionAndOrientation(b, [100.0 + i, 100.0, -100.0], [0, 0, 0, 1],
                                                     physicsClientId=client)
        _, _, segmentation = _render(client, intrinsics, view, projection, {}, segmentation_only=True)
    finally:
        for b, (position, orientation) in zip(others, poses):
            pybullet.resetBasePositionAndOrientation(b, position, orientation, physicsClientId=client)
    return segmentation == body
