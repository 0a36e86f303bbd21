"""Recompute TEMPLATE in headpuppet_example_detector.py: the mean 68-point face inside an OpenCV
Haar face box, measured with headpuppet's "mediapipe" detector on a folder of face photos.

    python tools/make_template.py /path/to/face/photos > template.txt

Each photo's largest Haar box and largest MediaPipe face are paired when the face's centre lies in
the box; the points are expressed in box units ((x - x0) / w, (y - y0) / h), averaged, and made
left-right symmetric (mirror + swap the iBUG pairs), since a box has no notion of head turn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from headpuppet.media.imaging import IMAGE_EXTS, read_image
from headpuppet.plugins import make_plugin_manager, registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headpuppet_example_detector import MIRROR, haar_boxes  # noqa: E402


def main(folder: str) -> None:
    detector = registry(make_plugin_manager(), "landmarks").create("mediapipe", static_image_mode=True)
    shapes = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in IMAGE_EXTS:
            continue
        image = read_image(path)
        boxes, faces = haar_boxes(image), detector.detect(image)
        if len(boxes) == 0 or not faces:
            print(f"# skipped {path.name}: no face", file=sys.stderr)
            continue
        x0, y0, w, h = boxes[0]
        cx, cy = faces[0].points.mean(0)
        if not (x0 <= cx <= x0 + w and y0 <= cy <= y0 + h):
            print(f"# skipped {path.name}: box and landmarks disagree", file=sys.stderr)
            continue
        shapes.append((faces[0].points - [x0, y0]) / [w, h])
    mean = np.mean(shapes, axis=0)
    mirrored = mean[MIRROR].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    template = (mean + mirrored) / 2
    print(f"# mean of {len(shapes)} faces")
    for i in range(0, 68, 4):
        print("    " + " ".join(f"({x:.3f}, {y:.3f})," for x, y in template[i:i + 4]))


if __name__ == "__main__":
    main(sys.argv[1])
