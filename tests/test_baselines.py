"""The training-free baselines of ``headpuppet evaluate`` (``headpuppet.evaluation.baselines``)
on real frames: warping by the landmark motion moves the face where the target's landmarks are."""

from __future__ import annotations

import numpy as np
import pytest

from headpuppet.media.landmarks import inter_ocular, landmark_error
from headpuppet.protocols import largest_face


def test_warp_baseline_moves_the_face_toward_the_target_landmarks(pm, tmp_path_factory):
    """On two frames of one video with different expressions, the warp's detected landmarks are
    closer to the target's than the unwarped source's are."""
    from headpuppet.testing import shared_file

    from headpuppet.evaluation.baselines import CopyBaseline, WarpBaseline
    from headpuppet.data.format import open_dataset
    from headpuppet.plugins import registry
    from headpuppet.data.preprocess import preprocess

    video = shared_file("videos/dtk_w009_happy.mp4")
    try:
        det = registry(pm, "landmarks").create("mediapipe")
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"mediapipe detector unavailable: {exc}")
    root = tmp_path_factory.mktemp("warp") / "ds"
    preprocess([video], root, size=128, every=6, max_frames=16, pm=pm)
    v = open_dataset(root).videos[0]
    lm = v.landmarks
    # the pair with the most different mouths (expression change), relative to face size
    mouth = (lm[:, 48:68] - lm[:, 48:68].mean(1, keepdims=True)) / inter_ocular(lm)[:, None, None]
    d = ((mouth[:, None] - mouth[None]) ** 2).sum(-1).mean(-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    src, tgt = v.frame(int(i)), lm[j]

    def err(method):
        out = method.render(method.prepare(src[None], lm[i:i + 1]), tgt[None])[0]
        det.reset()
        faces = det.detect(out)
        assert faces, f"no face found in the {method.name} output"
        return landmark_error(largest_face(faces).points, tgt)

    e_copy, e_warp, e_pwa = err(CopyBaseline()), err(WarpBaseline("tps")), err(WarpBaseline("pwa"))
    assert e_warp < e_copy
    assert e_pwa < e_copy
