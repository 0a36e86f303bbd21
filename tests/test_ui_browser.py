"""End to end in a real browser: ``headpuppet ui`` started as a user would, its printed address opened
in Debian's headless Chromium (driven by Playwright, pointed at /usr/bin/chromium: nothing downloads
a browser), a photo and a short driver from ../shared/data/faces uploaded, the faces checked, the
animation run, and the result found playable (with the driver's audio); a bad upload answered with
a readable line; and the webcam tab fed by Chromium's fake camera playing a face video.

Needs the ``ui`` extra (gradio), playwright (``dev`` extra) and the system browser
(``apt-get install chromium``; .ci/run installs it); skips, saying which is missing, otherwise.
HEADPUPPET_UI_SCREENSHOT=path.png (HEADPUPPET_UI_SCREENSHOT_WEBCAM) also saves a screenshot of the
finished page (of the webcam tab). About 30 s for the three on a busy 2-core machine, 10 s of it
starting the server; each test alone is under 15 s, so none is marked slow.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from headpuppet.testing import shared_file

CHROMIUM = os.environ.get("HEADPUPPET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]
# Absolute paths in HEADPUPPET_UI_PHOTO / HEADPUPPET_UI_DRIVER replace them (the committed screenshot
# is made from public-domain media so that no face of ../shared is committed)
PHOTO = os.environ.get("HEADPUPPET_UI_PHOTO", "photos/fr_obama.jpg")
DRIVER = os.environ.get("HEADPUPPET_UI_DRIVER", "videos/lp_d1.mp4")   # 0.5 s, 13 frames, with audio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``headpuppet ui`` in a subprocess; yields the address it printed."""
    pytest.importorskip("gradio", reason="the ui extra is not installed (pip install -e '.[ui]')")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no system chromium at {CHROMIUM} (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("ui")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
           "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    proc = subprocess.Popen([sys.executable, "-m", "headpuppet", "ui", "--port", str(_free_port()),
                             "--out-dir", str(tmp / "out"), "--people", str(tmp)],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"open (http://\S+?)/? in your browser", line)
            if m and not url:
                url.append(m.group(1))
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(120):
        proc.kill()
        pytest.fail("headpuppet ui printed no address in 120 s:\n" + "".join(lines[-30:]))
    yield url[0], lines
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def playwright(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    # Playwright gives every launch a fresh, temporary --user-data-dir
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    yield b
    b.close()


def test_upload_photo_and_driver_then_animate(server, browser, tmp_path):
    from playwright.sync_api import expect

    from headpuppet.media.video import probe

    url, log = server
    photo, driver = shared_file(PHOTO), shared_file(DRIVER)
    t0 = time.perf_counter()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    expect(page.locator("#hp-run")).to_be_visible(timeout=60_000)

    page.locator("#hp-source input[type=file]").set_input_files(str(photo))
    expect(page.locator("#hp-source-status")).to_contain_text("a face in each", timeout=90_000)
    expect(page.locator("#hp-source-preview img")).to_be_visible()

    page.locator("#hp-driver input[type=file]").set_input_files(str(driver))
    expect(page.locator("#hp-driver-status")).to_contain_text("sampled frames", timeout=90_000)
    expect(page.locator("#hp-driver-status")).to_contain_text("with audio")
    expect(page.locator("#hp-driver-preview img")).to_be_visible()

    page.locator("#hp-side input[type=checkbox]").check()     # an option set in the page reaches the run
    page.locator("#hp-run").click()
    video = page.locator("#hp-result video")
    expect(video).to_have_attribute("src", re.compile(r".+"), timeout=300_000)
    expect(page.locator("#hp-summary")).to_contain_text("done", timeout=60_000)
    # the browser can play it: metadata loaded, a duration, and time moves when played (muted)
    page.wait_for_function("""() => { const v = document.querySelector('#hp-result video');
                                      return v && v.readyState >= 2 && v.duration > 0; }""", timeout=60_000)
    played = page.evaluate("""async () => { const v = document.querySelector('#hp-result video');
                                            v.muted = true; await v.play();
                                            await new Promise(r => setTimeout(r, 300));
                                            v.pause(); return [v.currentTime, v.duration, v.error]; }""")
    assert played[0] > 0 and played[1] > 0.3 and played[2] is None, played
    # the file the page serves: every driver frame, with the driver's audio
    src = video.get_attribute("src")
    data = page.request.get(src if src.startswith("http") else url.rstrip("/") + "/" + src.lstrip("/")).body()
    out = tmp_path / "result.mp4"
    out.write_bytes(data)
    info, drv = probe(out), probe(driver)
    assert info.num_frames == drv.num_frames and info.has_audio
    assert info.width == 2 * info.height                      # side by side: driver | result
    assert not any("Traceback" in line for line in log), "".join(log)
    shot = os.environ.get("HEADPUPPET_UI_SCREENSHOT")
    if shot:
        page.wait_for_timeout(500)
        page.screenshot(path=shot, full_page=True)
    print(f"browser test: {time.perf_counter() - t0:.1f} s from opening the page to a playable video")


def test_bad_driver_is_a_readable_message(server, browser, tmp_path):
    from playwright.sync_api import expect

    url, log = server
    fake = tmp_path / "not_a_video.mp4"
    fake.write_bytes(b"this is text, not a video\n" * 50)
    page = browser.new_page()
    page.goto(url)
    page.locator("#hp-driver input[type=file]").set_input_files(str(fake))
    status = page.locator("#hp-driver-status")
    expect(status).to_contain_text("not a readable video", timeout=60_000)
    assert "Traceback" not in status.inner_text()


def test_webcam_mode_with_a_fake_camera(server, playwright, tmp_path):
    """The webcam tab, with Chromium's fake camera playing a real face video: frames go to the page's
    live function and animated frames come back."""
    import subprocess as sp

    from playwright.sync_api import expect

    from headpuppet.media.video import ffmpeg_exe

    url, log = server
    cam = tmp_path / "cam.y4m"
    sp.run([ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", "-i", str(shared_file("videos/dtk_m030_neutral.mp4")),
            "-vf", "scale=320:240,setsar=1", "-pix_fmt", "yuv420p", "-r", "25", str(cam)], check=True)
    flags = FLAGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-video-capture={cam}"]
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
    try:
        page = b.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000}).new_page()
        page.goto(url)
        page.locator("#hp-source input[type=file]").set_input_files(str(shared_file(PHOTO)))
        expect(page.locator("#hp-source-status")).to_contain_text("a face in each", timeout=90_000)
        page.get_by_role("tab", name="Live from the webcam").click()
        page.locator("#hp-cam").get_by_text("Click to Access Webcam").click()
        page.locator("#hp-cam button:has-text('Record')").first.click()
        page.wait_for_function("""() => { const t = (document.querySelector('#hp-cam-status') || {}).innerText || '';
                                          const m = t.match(/(\\d+) frames/); return m && +m[1] >= 10; }""",
                               timeout=120_000)
        expect(page.locator("#hp-cam-out img")).to_be_visible()
        status = page.locator("#hp-cam-status").inner_text()
        assert "ms per frame" in status and "no face" not in status, status
        shot = os.environ.get("HEADPUPPET_UI_SCREENSHOT_WEBCAM")
        if shot:
            page.screenshot(path=shot, full_page=True)
    finally:
        b.close()
