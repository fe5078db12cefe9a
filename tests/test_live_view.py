"""The live view in a real headless Chromium (Debian packages chromium + chromium-driver,
driven by Selenium): after N frames of a paced series the page shows the counters and the
partial images (the scanned rows differ from the rows still to come)."""

import io
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bokeh")
webdriver = pytest.importorskip("selenium.webdriver")

sys.path.insert(0, str(Path(__file__).parent))
from live_case import CONFIG, make_case  # noqa: E402
from ptyro_workflows.live import build_session  # noqa: E402
from ptyro_workflows.live.sources import Frame, SeriesEnd, SeriesStart  # noqa: E402
from ptyro_workflows.live.view import serve  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs the chromium and chromium-driver packages (.ci/run installs them)")


class Paced:
    """An in-memory stream: the frames at ``fps``, pausing after ``pause_after`` until released."""

    def __init__(self, counts, fps, pause_after):
        self.counts, self.fps, self.pause_after = counts, fps, pause_after
        self.release = threading.Event()
        self.closed = False

    def __iter__(self):
        rx, ry = self.counts.shape[:2]
        yield SeriesStart(rx * ry, self.counts.shape[2:], str(self.counts.dtype), 1, {})
        for k in range(rx * ry):
            if k == self.pause_after:
                self.release.wait(60)
            if self.closed:
                return
            time.sleep(1.0 / self.fps)
            yield Frame(k, self.counts[divmod(k, ry)])
        yield SeriesEnd(1)

    def close(self):
        self.closed = True
        self.release.set()


def test_live_view_shows_partial_images(tmp_path, monkeypatch):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, _, _, counts = make_case()
    n_shown = 40  # 5 of the 8 scan rows
    stream = Paced(counts, fps=400, pause_after=n_shown)
    monkeypatch.setattr("ptyro_workflows.live.app.open_source", lambda spec, **o: stream)
    cfg = {**CONFIG, "live": {**CONFIG["live"], "final_passes": 1, "min_frames": 8, "direct": ["ssb"]}}
    session = build_session("paced:memory", cfg, tmp_path / "view.h5")
    server = serve(session, port=0)
    runner = threading.Thread(target=session.run)
    runner.start()
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,1000"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        assert server.url.startswith("http://127.0.0.1:")  # localhost by default
        driver.get(server.url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        # Bokeh renders into shadow roots: read what the page shows from its document's models
        stats = "return Bokeh.documents.length ? Bokeh.documents[0].get_model_by_name('stats').text : ''"
        # the counters reach the pause, and the reconstruction has done a pass
        wait.until(lambda d: f"{n_shown} / 64" in d.execute_script(stats))
        wait.until(lambda d: "pass" in d.execute_script(stats))
        time.sleep(1.5)  # two refreshes of the images
        text = driver.execute_script(stats)
        titles = driver.execute_script(
            "return Bokeh.documents[0].all_models ? [...Bokeh.documents[0].all_models].map(m => m.title && m.title.text).filter(t => t) : []"
        )
        for word in ("received", "processed", "dropped", "frame rate", "loss"):
            assert word in text, word
        assert "virtual BF" in titles and "ptychography phase (rad)" in titles and "live SSB phase (rad)" in titles, titles
        png = driver.get_screenshot_as_png()
        # the BF image as the browser received it: scanned rows (x < 5) vary, the rest is flat
        bf = np.asarray(driver.execute_script(
            "const ds = Bokeh.documents[0].get_model_by_name('src_bf'); const im = ds.data.image[0];"
            "return Array.from(im);"), float).reshape(8, 8)  # fmt: skip
        assert bf[:, :5].std() > 0 and bf[:, 5:].std() == 0  # displayed transposed: columns are x
        ssb_img = np.asarray(driver.execute_script("return Array.from(Bokeh.documents[0].get_model_by_name('src_ssb_phase').data.image[0]);"), float)
        assert ssb_img.size == 64 and ssb_img.std() > 0  # the live SSB phase of the first 40 frames is on the page
    finally:
        driver.quit()
        stream.release.set()
        runner.join(60)
        server.stop()
    out = Path(os.environ.get("PTYRO_LIVE_SCREENSHOT", tmp_path / "live-view.png"))
    out.write_bytes(png)
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), float)
    assert img.shape[0] > 500 and img.std() > 10  # a rendered page, not a blank one
    assert session.result.complete
