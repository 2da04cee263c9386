#!/usr/bin/env python
"""Number the GraspNet-1Billion RealSense RGB views into the image folder of GraspNet-OS.

    python training/prepare_graspnet.py --src /data/graspnet --dst datasets/graspnet_os/images

Finds every ``scene_XXXX`` folder under --src (directly or in train_*/test_* subfolders), sorts them by scene
number (not by directory listing order) and copies ``scene_XXXX/realsense/rgb/0000..0255.png`` to
``dst/NNNNNN.png``: image k is view (k-1) mod 256 of the ((k-1) // 256)-th scene. Every view is checked to exist
before anything is copied. Re-running is safe: files already in place (same size and time) are skipped and any
other file with the same number is overwritten, so the destination never holds duplicates or stale images.
"""

import argparse
import os
import re
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

VIEWS_PER_SCENE = 256  # GraspNet-1Billion RealSense views per scene (semseg_core.data.graspnet)
SCENE_DIR = re.compile(r"^scene_(\d+)$")


class PrepareError(RuntimeError):
    pass


def find_scenes(src: str) -> List[Tuple[int, str]]:
    """(scene number, folder) of every scene_XXXX directly in `src` or one level down, sorted by number."""
    if not os.path.isdir(src):
        raise PrepareError(f"source folder not found: {src}")
    found: Dict[int, str] = {}
    candidates = [src] + sorted(os.path.join(src, d) for d in os.listdir(src)
                                if os.path.isdir(os.path.join(src, d)) and not SCENE_DIR.match(d))
    for parent in candidates:
        for name in os.listdir(parent):
            match = SCENE_DIR.match(name)
            path = os.path.join(parent, name)
            if not match or not os.path.isdir(path):
                continue
            number = int(match.group(1))
            if number in found:
                raise PrepareError(f"scene {number} found twice: {found[number]} and {path}")
            found[number] = path
    if not found:
        raise PrepareError(f"no scene_XXXX folders under {src} (looked in it and its subfolders)")
    return sorted(found.items())


def plan_copies(scenes: Sequence[Tuple[int, str]], views: int) -> List[Tuple[str, str]]:
    """(source view, destination file name) for every image; a missing view is an error naming it."""
    plan, missing = [], []
    for rank, (_, scene_dir) in enumerate(scenes):
        for view in range(views):
            src = os.path.join(scene_dir, "realsense", "rgb", f"{view:04d}.png")
            if not os.path.isfile(src):
                missing.append(src)
            plan.append((src, f"{rank * views + view + 1:06d}.png"))
    if missing:
        shown = "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
        raise PrepareError(f"{len(missing)} of {len(plan)} views are missing ({views} expected per scene):\n  {shown}")
    return plan


def _up_to_date(src: str, dst: str) -> bool:
    if not os.path.isfile(dst):
        return False
    a, b = os.stat(src), os.stat(dst)
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns  # copy2 keeps the source time


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="GraspNet-1Billion download (holds scene_XXXX folders)")
    parser.add_argument("--dst", required=True, help="numbered image folder, e.g. datasets/graspnet_os/images")
    parser.add_argument("--views-per-scene", type=int, default=VIEWS_PER_SCENE, help=argparse.SUPPRESS)
    parser.add_argument("--allow-gaps", action="store_true",
                        help="accept scene numbers that are not 0..N-1 (the numbering then does not match the "
                        "GraspNet-OS annotation files)")
    parser.add_argument("--dry-run", action="store_true", help="check and report, copy nothing")
    args = parser.parse_args(argv)
    try:
        scenes = find_scenes(args.src)
        numbers = [n for n, _ in scenes]
        if numbers != list(range(len(numbers))) and not args.allow_gaps:
            absent = sorted(set(range(max(numbers) + 1)) - set(numbers))
            raise PrepareError(
                f"scene numbers are not 0..{len(numbers) - 1} (missing: {absent[:20]}{' ...' if len(absent) > 20 else ''}"
                "); image numbers would not match the GraspNet-OS annotations. Download all scenes or pass --allow-gaps"
            )
        plan = plan_copies(scenes, args.views_per_scene)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    expected = {name for _, name in plan}
    extra = sorted(f for f in os.listdir(args.dst) if f not in expected) if os.path.isdir(args.dst) else []
    copied = skipped = 0
    if not args.dry_run:
        os.makedirs(args.dst, exist_ok=True)
        for src, name in tqdm(plan, desc="copying views", unit="img"):
            dst = os.path.join(args.dst, name)
            if _up_to_date(src, dst):
                skipped += 1
                continue
            tmp = os.path.join(args.dst, f".{name}.tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)  # an interrupted run never leaves a truncated image under a final name
            copied += 1
    print(f"scenes: {len(scenes)} (numbers {numbers[0]}..{numbers[-1]}), views per scene: {args.views_per_scene}")
    print(f"images: {len(plan)} -> {args.dst}/000001.png .. {len(plan):06d}.png")
    if args.dry_run:
        print("dry run: nothing copied")
    else:
        print(f"copied: {copied}, already up to date: {skipped}")
    if extra:
        print(f"note: {len(extra)} other file(s) in {args.dst} are not part of this numbering, e.g. {extra[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
