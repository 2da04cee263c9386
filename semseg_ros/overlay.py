"""Debug overlay: masks, boxes and names drawn on the input image.

Known instances get a solid box and a colour from a fixed palette; unknown instances are drawn
white with a dashed box and hatched mask so they stand out regardless of palette colours.
"""
import cv2
import numpy as np

_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0),
], dtype=np.uint8)
_UNKNOWN_COLOR = (255, 255, 255)
_ALPHA = 0.45


def instance_color(instance_index, known):
    return _PALETTE[instance_index % len(_PALETTE)] if known else np.array(_UNKNOWN_COLOR, np.uint8)


def _dashed_rectangle(image, p0, p1, color, dash=8):
    x0, y0 = p0
    x1, y1 = p1
    for start in range(x0, x1, 2 * dash):
        end = min(start + dash, x1)
        cv2.line(image, (start, y0), (end, y0), color, 2)
        cv2.line(image, (start, y1), (end, y1), color, 2)
    for start in range(y0, y1, 2 * dash):
        end = min(start + dash, y1)
        cv2.line(image, (x0, start), (x0, end), color, 2)
        cv2.line(image, (x1, start), (x1, end), color, 2)


def draw_overlay(image_rgb, result):
    """A new HxWx3 uint8 RGB image with ``result``'s instances drawn over ``image_rgb``."""
    canvas = np.array(image_rgb, dtype=np.uint8, copy=True)
    height, width = canvas.shape[:2]
    label = np.asarray(result.label_image)
    count = len(result.scores)
    if count:
        colors = np.zeros((count + 1, 3), np.uint8)
        for i in range(count):
            colors[i + 1] = instance_color(i, bool(result.is_known[i]))
        painted = label > 0
        if not all(bool(k) for k in result.is_known):
            # hatch unknown masks: only every other diagonal stripe is tinted
            yy, xx = np.mgrid[0:height, 0:width]
            stripes = ((xx + yy) // 6) % 2 == 0
            unknown_ids = np.flatnonzero(~np.asarray(result.is_known, bool)) + 1
            painted &= ~(np.isin(label, unknown_ids) & ~stripes)
        tint = colors[label[painted]].astype(np.float32)
        canvas[painted] = (canvas[painted] * (1 - _ALPHA) + tint * _ALPHA).astype(np.uint8)
    for i in range(count):
        known = bool(result.is_known[i])
        color = tuple(int(c) for c in instance_color(i, known))
        x0, y0, x1, y1 = (int(round(float(v))) for v in result.boxes[i])
        x0, x1 = max(0, min(x0, width - 1)), max(0, min(x1, width - 1))
        y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height - 1))
        if known:
            cv2.rectangle(canvas, (x0, y0), (x1, y1), color, 2)
        else:
            _dashed_rectangle(canvas, (x0, y0), (x1, y1), color)
        text = f"{i + 1}:{result.class_names[i]} {float(result.scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = y0 - 3 if y0 - th - 4 >= 0 else min(height - 1, y0 + th + 3)
        cv2.rectangle(canvas, (x0, ty - th - 2), (x0 + tw + 2, ty + base - 1), color, -1)
        cv2.putText(canvas, text, (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas
