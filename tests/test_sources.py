"""What animate and fine-tune read: SOURCE photos, folders and videos, and the DRIVER
(headpuppet.fewshot.sources)."""

from __future__ import annotations

import numpy as np
import pytest


def test_sources_photos_folder_video_and_driver(tmp_path, astronaut):
    from headpuppet.errors import MediaError
    from headpuppet.media.imaging import write_image
    from headpuppet.fewshot.sources import load_source_images, open_driver
    from headpuppet.media.video import VideoWriter

    folder = tmp_path / "shots"
    for i in (2, 10, 1):
        write_image(folder / f"shot_{i}.png", astronaut[::4, ::4])
    src = load_source_images([folder])
    assert src.labels == ["shot_1.png", "shot_2.png", "shot_10.png"] and src.stem == "shots"
    assert load_source_images([folder], k=2).labels == ["shot_1.png", "shot_10.png"]  # k spread evenly
    # a video folder of a preprocessed dataset: its frames
    ds_video = tmp_path / "ds" / "videos" / "clip"
    for i in range(4):
        write_image(ds_video / "frames" / f"{i:06d}.jpg", astronaut[::8, ::8])
    (ds_video / "meta.json").write_text("{}")
    assert load_source_images([ds_video], k=3).labels == ["000000.jpg", "000002.jpg", "000003.jpg"]
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 25) as w:
        for i in range(20):
            w.write(np.full((32, 32, 3), 10 * i, np.uint8))
    vsrc = load_source_images([video], k=4)
    assert vsrc.labels == ["clip.mp4#frame 0", "clip.mp4#frame 6", "clip.mp4#frame 13", "clip.mp4#frame 19"]
    assert abs(int(vsrc.images[2].mean()) - 130) <= 3  # the 14th frame, evenly sampled
    both = load_source_images([folder / "shot_1.png", video], k=2)
    assert len(both.images) == 3 and both.stem == "shot_1"
    drv = open_driver(video)
    assert drv.num_frames == 20 and drv.fps == 25 and drv.is_video and not drv.has_audio
    assert sum(1 for _ in drv.frames()) == 20
    fdrv = open_driver(folder, fps=12)
    assert fdrv.num_frames == 3 and fdrv.fps == 12 and not fdrv.is_video and fdrv.stem == "shots"
    with pytest.raises(MediaError, match="no such file"):
        load_source_images([tmp_path / "missing.jpg"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MediaError, match="not a photo or video"):
        load_source_images([tmp_path / "notes.txt"])
    with pytest.raises(MediaError, match="driver must be a video"):
        open_driver(folder / "shot_1.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="holds no image frames"):
        open_driver(tmp_path / "empty")
    with pytest.raises(MediaError, match="no such file or folder"):
        open_driver(tmp_path / "missing")
