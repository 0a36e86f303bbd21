"""Live driving: animate a person from a camera or a stream, one frame at a time, as frames arrive.

``animate`` (:func:`headpuppet.fewshot.pipeline.render_video`) knows the whole driver before it renders: pass 1
finds every frame's landmarks, chooses one crop box and the most neutral reference frame, and smooths
with a zero-phase filter; pass 2 renders. A live driver has no "whole", so this module does the same
steps in one causal pass per frame (Zakharov et al. 2019, section 4, "puppeteering", in real time):

1. detect the driver's face (the model's landmark detector, in tracking mode);
2. the crop box is fixed from the first frame with a face; frames without a face hold the last
   landmarks (counted), and before the first face the person is shown still;
3. smooth causally: a One-Euro filter (Casiez et al. 2012) per coordinate, whose minimum cut-off is
   the -3 dB frequency of ``animate``'s Gaussian of the same ``smooth`` sigma (fps / (7.5 sigma))
   and which opens up when the landmarks move fast, so speech is not delayed;
4. relative mode: the reference is the mean of the first ``reference_frames`` frames with a face
   (the person is assumed to start facing the camera, mouth closed), and
   :func:`headpuppet.fewshot.retarget.transfer_relative` moves the source's own landmarks by the driver's
   motion relative to it; absolute mode passes the driver's landmarks through;
5. render through :meth:`headpuppet.fewshot.animator.Animator.render` (so any generator works, including
   the warp-guided one that needs the source shots), compose (paste-back, side-by-side) and write.

Reading runs in its own thread (an ffmpeg process decoding DRIVER to raw RGB), detection in a
second one and rendering in the caller's, so the three overlap. A real-time source (a camera, a
network URL, a file with ``realtime``) never waits for us: when rendering is slower than the
stream, the newest frame is taken and older ones are dropped (counted), so latency stays bounded.
Other sources (stdin, a named pipe, a file) are read at our pace and no frame is dropped.

DRIVER specs (:func:`is_stream`, :func:`input_args`): ``-`` (stdin), a camera (``/dev/video0``, or
``0``), a named pipe, any URL ffmpeg reads (``rtsp://``, ``udp://``, ``tcp://``, ``http://``,
``srt://``...), or a video file. Outputs (:class:`FfmpegSink`): a video file, ``-`` (stdout, a stream
another program reads; MPEG-TS by default), a URL, or a v4l2 device such as a v4l2loopback virtual
camera (``/dev/video10``) that video-call programs can use; :class:`PreviewSink` shows a window.

In: DRIVER (a spec string as above), a loaded animator and person (:mod:`headpuppet.fewshot`).
Out: rendered ``(H, W, 3)`` uint8 RGB frames written to each sink as they are made, and a
:class:`LiveStats` of what the run did (frames, drops, latency, per-stage timings).

- :mod:`.capture` - opening DRIVER (:func:`input_args`; whether it is live: :mod:`headpuppet.media.streams`) and reading it
  (:class:`FrameSource`, an ffmpeg process and a reader thread).
- :mod:`.smoothing` - the causal One-Euro landmark filter.
- :mod:`.pipeline` - :class:`LiveAnimator`: per frame, detect, smooth, retarget (``track``), then
  render and compose (``render``).
- :mod:`.sinks` - where frames go: :class:`FfmpegSink` (file, stdout, URL, v4l2), :class:`PreviewSink`.
- :mod:`.stats` - :class:`LiveStats`, the timings and the summary lines.
- :mod:`.run` - :func:`run_live`: the reader, detection and rendering threads tied together.
"""

from ..media.streams import is_realtime, is_stream
from .capture import (
    URL_SCHEMES,
    FrameSource,
    StreamInfo,
    input_args,
    parse_input_args,
)
from .pipeline import LiveAnimator, Tracked
from .run import run_live
from .sinks import (
    STREAM_FORMATS,
    FfmpegSink,
    PreviewSink,
    StreamClosed,
    default_live_output,
    has_display,
)
from .smoothing import OneEuroFilter, smoothing_filter
from .stats import LiveStats

__all__ = [
    "FfmpegSink", "FrameSource", "LiveAnimator", "LiveStats", "OneEuroFilter", "PreviewSink", "STREAM_FORMATS",
    "StreamClosed", "StreamInfo", "Tracked", "URL_SCHEMES", "default_live_output", "has_display", "input_args",
    "is_realtime", "is_stream", "parse_input_args", "run_live", "smoothing_filter",
]
