"""headpuppet.media.video: probe, decode (with sampling), atomic H.264 writing with audio muxing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from headpuppet.errors import MediaError
from headpuppet.media.video import VideoWriter, ffmpeg_exe, probe, read_frames, read_frames_any


@pytest.fixture(scope="module")
def av_video(tmp_path_factory) -> Path:
    """A 2 s 25 fps 96x64 test pattern with a 3 s sine tone (audio longer than the video)."""
    path = tmp_path_factory.mktemp("av") / "av.mp4"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error",
           "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=2",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)
    return path


def test_probe_generated(av_video):
    info = probe(av_video)
    assert (info.width, info.height) == (96, 64)
    assert info.fps == pytest.approx(25.0)
    assert info.num_frames == 50
    assert info.has_audio
    assert info.duration == pytest.approx(3.0, abs=0.1)


def test_probe_shared(shared_video):
    info = probe(shared_video)
    # SOURCES.md: 3.76 s, 25 fps, 256x256, 94 frames, no audio
    assert (info.width, info.height, info.num_frames) == (256, 256, 94)
    assert info.fps == pytest.approx(25.0)
    assert not info.has_audio
    assert info.duration == pytest.approx(3.76, abs=0.05)


def test_read_frames_count_sampling_and_limit(av_video):
    frames = list(read_frames(av_video))
    assert len(frames) == 50
    assert frames[0].shape == (64, 96, 3) and frames[0].dtype == np.uint8
    every3 = list(read_frames(av_video, every=3))
    assert len(every3) == 17  # frames 0, 3, ..., 48
    for k in (0, 1, 7, 16):
        # sampled frame k is source frame 3k (testsrc changes every frame: a counter is drawn)
        assert np.array_equal(every3[k], frames[3 * k])
    limited = list(read_frames(av_video, every=2, max_frames=5))
    assert len(limited) == 5
    assert np.array_equal(limited[4], frames[8])


def test_read_frames_matches_shared_frame_count(shared_video):
    assert sum(1 for _ in read_frames(shared_video)) == probe(shared_video).num_frames


@pytest.mark.parametrize("make", ["missing", "text", "folder"])
def test_unreadable_inputs_are_one_line_media_errors(tmp_path, make):
    if make == "missing":
        path = tmp_path / "nope.mp4"
    elif make == "text":
        path = tmp_path / "notes.mp4"
        path.write_text("this is not a video\n")
    else:
        path = tmp_path / "dir.mp4"
        path.mkdir()
    for fn in (probe, lambda p: list(read_frames(p))):
        with pytest.raises(MediaError) as err:
            fn(path)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=0.5",
                    "-c:a", "aac", str(path)], check=True)
    with pytest.raises(MediaError, match="no video stream"):
        probe(path)


def test_writer_muxes_audio_and_is_shortest(av_video, tmp_path):
    out = tmp_path / "sub" / "out.mp4"
    src = list(read_frames(av_video))
    with VideoWriter(out, fps=25, audio_from=av_video) as w:
        for f in src[:30]:
            w.write(f)
    info = probe(out)
    assert info.has_audio
    assert info.num_frames == 30 and info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (96, 64)
    assert info.duration == pytest.approx(1.2, abs=0.15)  # -shortest: the 3 s tone was cut
    back = list(read_frames(out))
    assert len(back) == 30
    # crf 18 is close to the source (mean abs error of a few levels)
    assert np.abs(back[10].astype(int) - src[10].astype(int)).mean() < 6
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]  # no temporaries left


def _audio_packets(path) -> list[str]:
    """The md5 of each audio packet of ``path``, as stored (not decoded)."""
    res = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy",
                          "-f", "framemd5", "-"], check=True, capture_output=True, text=True)
    return [line.rsplit(",", 1)[1].strip() for line in res.stdout.splitlines() if line and not line.startswith("#")]


def test_writer_copies_aac_and_encodes_other_audio(av_video, tmp_path):
    """AAC audio goes into the output as it is (the same packets, cut at the last frame); PCM, which
    players rarely take in MP4, is encoded AAC and padded to the last frame."""
    frames = list(read_frames(av_video))[:30]  # 1.2 s; the tone lasts 3 s
    out = tmp_path / "copied.mp4"
    with VideoWriter(out, fps=25, audio_from=av_video) as w:
        for f in frames:
            w.write(f)
    info = probe(out)
    assert probe(av_video).audio_codec == "aac" and info.audio_codec == "aac" and info.num_frames == 30
    src, got = _audio_packets(av_video), _audio_packets(out)
    assert 0 < len(got) < len(src) and got == src[:len(got)]
    assert info.duration == pytest.approx(1.2, abs=0.05)

    pcm = tmp_path / "pcm.mov"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-map", "0:v", "-map", "1:a",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(pcm)], check=True)
    assert probe(pcm).audio_codec == "pcm_s16le"
    out = tmp_path / "encoded.mp4"
    with VideoWriter(out, fps=25, audio_from=pcm) as w:
        for f in frames:
            w.write(f)
    info = probe(out)
    assert info.audio_codec == "aac" and info.num_frames == 30
    assert info.duration == pytest.approx(1.2, abs=0.1)  # the 0.5 s tone padded with silence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied.mp4", "encoded.mp4", "pcm.mov"]


def test_writer_without_audio_source_audio_and_odd_size(tmp_path, shared_video):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, fps=10, audio_from=shared_video) as w:  # the shared clip has no audio
        for i in range(7):
            w.write(np.full((33, 47, 3), 20 * i, np.uint8))
    info = probe(out)
    assert not info.has_audio
    assert (info.width, info.height, info.num_frames) == (48, 34, 7)  # padded to even
    assert info.fps == pytest.approx(10.0)


def test_writer_error_leaves_nothing(tmp_path):
    out = tmp_path / "never.mp4"
    with pytest.raises(KeyError):
        with VideoWriter(out, fps=25) as w:
            for _ in range(5):
                w.write(np.zeros((32, 32, 3), np.uint8))
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_buffered_writer_encodes_the_same_frames_and_holds_them_until_full(tmp_path, av_video):
    """``buffer_bytes``: frames go to the encoder a bufferful at a time (and the rest on exit), into
    the same video, audio included; an error before the exit leaves nothing, kept frames included."""
    frames = list(read_frames(av_video))
    nbytes = frames[0].nbytes
    with VideoWriter(tmp_path / "a.mp4", 25, audio_from=av_video) as w:
        for f in frames:
            w.write(f)
    with VideoWriter(tmp_path / "b.mp4", 25, audio_from=av_video, buffer_bytes=20 * nbytes) as w:
        for i, f in enumerate(frames):
            w.write(f)
            assert len(w._pending) == (i + 1) % 20  # handed over at every 20th frame
    assert probe(tmp_path / "b.mp4").has_audio and probe(tmp_path / "b.mp4").num_frames == len(frames) == 50
    np.testing.assert_array_equal(np.stack(list(read_frames(tmp_path / "a.mp4"))),
                                  np.stack(list(read_frames(tmp_path / "b.mp4"))))
    with pytest.raises(KeyError):
        with VideoWriter(tmp_path / "c.mp4", 25, buffer_bytes=20 * nbytes) as w:
            for f in frames[:25]:
                w.write(f)
            raise KeyError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_writer_replaces_existing_only_on_success(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError
    assert out.read_bytes() == b"old"
    with pytest.raises(ValueError):
        with VideoWriter(out, fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            w.write(np.zeros((18, 16, 3), np.uint8))  # size changes: refused
    assert out.read_bytes() == b"old"
    with pytest.raises(MediaError):
        with VideoWriter(out, fps=25):
            pass  # no frames: no video
    assert out.read_bytes() == b"old"


def test_read_frames_any_folder(tmp_path, astronaut):
    from headpuppet.media.imaging import write_image

    for i in (10, 2, 1):  # natural order: 1, 2, 10
        img = astronaut.copy()
        img[:8, :8] = i
        write_image(tmp_path / f"f{i}.png", img)
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(read_frames_any(tmp_path))
    assert [int(f[0, 0, 0]) for f in frames] == [1, 2, 10]
    assert [int(f[0, 0, 0]) for f in read_frames_any(tmp_path, every=2)] == [1, 10]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MediaError, match="holds no image frames"):
        list(read_frames_any(empty))
    with pytest.raises(MediaError, match="no such"):
        list(read_frames_any(tmp_path / "missing"))
