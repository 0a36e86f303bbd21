"""What a DRIVER is: a live source (a camera, stdin, a pipe, a URL) or a file or folder to read whole.

Plain checks of the name and the file system, without cv2 or torch: ``headpuppet animate`` asks
this before it starts anything (its driver landmarks' helper starts right after), and
:mod:`headpuppet.live` reads the live sources.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

__all__ = ["is_stream", "is_realtime"]


def is_stream(spec: str | Path) -> bool:
    """True when ``spec`` is a live source rather than a video file or a folder of frames: ``-``,
    a camera index or device, a named pipe or a character device, or a URL such as ``rtsp://...``."""
    s = str(spec)
    if s == "-" or re.fullmatch(r"\d{1,2}", s) and not Path(s).exists():
        return True
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s) or s.startswith("pipe:"):
        return True
    if s.startswith("/dev/video"):
        return True
    try:
        mode = os.stat(s).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def is_realtime(spec: str | Path) -> bool:
    """Sources that go on whether we read them or not (cameras, network streams): drop late frames."""
    s = str(spec)
    if s == "-" or s.startswith("pipe:"):
        return False
    if re.fullmatch(r"\d{1,2}", s) or s.startswith("/dev/video"):
        return True
    if "://" in s:
        return True
    try:
        return stat.S_ISCHR(os.stat(s).st_mode)
    except OSError:
        return False
