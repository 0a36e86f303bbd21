"""What a live run did: :class:`LiveStats`, per-frame timings in milliseconds, their summary as a
dict (``--json``) and as the lines ``headpuppet live`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LiveStats:
    """What a live run did, with per-frame timings in milliseconds."""

    source: str = ""
    fps_in: float = 0.0
    decoded: int = 0
    processed: int = 0
    dropped: int = 0
    no_face: int = 0
    held: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)    # decoded -> written
    detect_ms: list[float] = field(default_factory=list)
    render_ms: list[float] = field(default_factory=list)     # G + compositing
    write_ms: list[float] = field(default_factory=list)
    render_cpu_ms: list[float] = field(default_factory=list)   # CPU time of the rendering thread
    cpu_seconds: float = 0.0      # CPU time of the whole process (all its threads) during the run
    stopped: str = "end of stream"
    span: float = 0.0             # seconds from the first frame written to the last

    @property
    def fps_out(self) -> float:
        """Frames made per second while frames were coming (not counting start-up or a stream's
        closing timeout)."""
        if self.processed > 1 and self.span > 0:
            return (self.processed - 1) / self.span
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @staticmethod
    def _q(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    def cpu_ms_per_frame(self) -> float | None:
        """CPU time the process spent per frame made (detection, rendering, reading, writing)."""
        return self.cpu_seconds * 1e3 / self.processed if self.processed else None

    def per_frame_ms(self) -> float:
        """Mean time of the slowest stage (what limits the frame rate when stages overlap)."""
        stages = [np.mean(v) for v in (self.detect_ms, self.render_ms) if v]
        return float(max(stages)) if stages else float("nan")

    def as_dict(self) -> dict:
        def summary(v):
            return {"mean": float(np.mean(v)) if v else None, "median": self._q(v, 50) if v else None,
                    "p90": self._q(v, 90) if v else None, "max": float(np.max(v)) if v else None}

        return {"source": self.source, "fps_in": self.fps_in, "decoded": self.decoded, "processed": self.processed,
                "dropped": self.dropped, "no_face": self.no_face, "held": self.held, "seconds": self.seconds,
                "fps_out": self.fps_out, "span": self.span, "stopped": self.stopped,
                "latency_ms": summary(self.latency_ms), "detect_ms": summary(self.detect_ms),
                "render_ms": summary(self.render_ms), "write_ms": summary(self.write_ms),
                "render_cpu_ms": summary(self.render_cpu_ms), "cpu_seconds": self.cpu_seconds,
                "cpu_ms_per_frame": self.cpu_ms_per_frame(),
                "frames": {"latency_ms": self.latency_ms, "detect_ms": self.detect_ms,
                           "render_ms": self.render_ms, "write_ms": self.write_ms}}

    def lines(self) -> list[str]:
        out = [f"{self.processed} frames made in {self.seconds:.1f} s ({self.fps_out:.1f} frames/s while they came) from "
               f"{self.decoded} decoded ({self.stopped})"
               + (f"; {self.dropped} dropped to keep up" if self.dropped else "")]
        if self.no_face:
            out.append(f"{self.no_face} frame(s) without a face" + (f" ({self.held} held the last face)" if self.held else ""))
        if self.latency_ms:
            out.append(f"latency per frame (decoded -> written): median {self._q(self.latency_ms, 50):.0f} ms, "
                       f"90% {self._q(self.latency_ms, 90):.0f} ms, max {max(self.latency_ms):.0f} ms")
            out.append(f"per frame: detect {np.mean(self.detect_ms):.1f} ms, render {np.mean(self.render_ms):.1f} ms, "
                       f"write {np.mean(self.write_ms):.1f} ms (detection overlaps rendering); CPU time: "
                       f"render {np.mean(self.render_cpu_ms):.1f} ms, whole process {self.cpu_ms_per_frame():.1f} ms")
        if self.fps_in and self.processed:
            budget = 1000.0 / self.fps_in
            need = self.per_frame_ms()
            if self.dropped == 0 and need <= budget * 1.02:
                out.append(f"keeps up with {self.fps_in:g} fps ({need:.0f} ms of {budget:.0f} ms per frame)")
            else:
                out.append(f"does not keep up with {self.fps_in:g} fps: {need:.0f} ms per frame where "
                           f"{budget:.0f} ms are available, {1000.0 / need:.1f} frames/s at most")
        return out
