"""The page of ``mtdense serve`` in headless Chromium: upload an image, wait for the panels, click a
pixel and read its class and depth, move the opacity slider, send several images and a video
frame by frame, save a screenshot.

Needs Chromium, its driver and selenium (Debian / Ubuntu: ``apt-get install chromium
chromium-driver`` and ``pip install selenium``; ``.ci/run`` installs them); else skipped, saying so.
Set ``MTDENSE_SERVE_SCREENSHOT=docs/serve.png`` to keep the screenshot (the README's picture).
"""

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtdense.serve import create_app
from mtdense.viz import colorize_depth

REPO = Path(__file__).resolve().parents[2]
STREET = REPO / "docs" / "images" / "synthetic_preview.jpg"  # a grid of synthetic street frames, 384 x 192 each
INSTALL = ("install Chromium and its driver (Debian / Ubuntu: apt-get install chromium chromium-driver) "
           "and selenium (pip install selenium), or set MTDENSE_CHROMIUM and MTDENSE_CHROMEDRIVER to their paths")


def _chromium() -> tuple[str, str]:
    pytest.importorskip("selenium", reason=f"selenium is not installed; {INSTALL}")
    browser = os.environ.get("MTDENSE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "chrome")) if p), None)
    driver = os.environ.get("MTDENSE_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(f"no {'Chromium' if not browser else 'chromedriver'} found here; {INSTALL}")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,660",
                 "--force-device-scale-factor=1", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as exc:  # a browser that is there but does not start here
        pytest.skip(f"Chromium ({binary}) did not start: {str(exc).splitlines()[0]}; {INSTALL}")
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, predictor, live_server):
    with live_server(create_app(predictor)) as server:
        browser.get(server.url + "/")
        _wait(browser, lambda: browser.find_element("id", "status").text == "ready", "the page reading /model")
        yield browser


def _wait(driver, ready, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        status = driver.find_element("id", "status")
        if status.get_attribute("data-state") == "error":
            pytest.fail(f"the page shows an error while {what}: {status.text}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s: {what}; status: {status.text!r}")
        time.sleep(0.05)


def _shown(driver) -> int:
    return int(driver.find_element("id", "status").get_attribute("data-shown") or 0)


def _send(driver, input_id: str, paths: list[Path], expect: int, what: str) -> None:
    """Pick ``paths`` in the file input; wait until ``expect`` more results are shown and the page is done."""
    before = _shown(driver)
    driver.find_element("id", input_id).send_keys("\n".join(str(p) for p in paths))
    _wait(driver, lambda: _shown(driver) >= before + expect and driver.find_element("id", "status").get_attribute("data-state") == "done", what)


def _street(tmp_path: Path, make_image) -> tuple[np.ndarray, Path]:
    """The first synthetic street frame of the README's picture (a generated image where it is missing), as a PNG."""
    grid = cv2.imread(str(STREET)) if STREET.is_file() else None
    rgb = grid[:192, :384, ::-1].copy() if grid is not None else make_image(21, (192, 384))
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb, path


def test_upload_shows_panels_and_a_clicked_pixel_reads_its_class_and_depth(page, predictor, make_image, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    rgb, path = _street(tmp_path, make_image)
    pred = predictor.predict(rgb)
    _send(page, "pick-images", [path], 1, "the answer for one image")
    assert page.find_element("id", "panels").is_displayed()
    sizes = page.execute_script("return ['view-image', 'view-seg', 'view-depth'].map(id => "
                                "[document.getElementById(id).width, document.getElementById(id).height])")
    assert sizes == [[384, 192]] * 3
    counts = np.bincount(pred.seg.ravel(), minlength=len(pred.classes))
    legend = [li.get_attribute("data-class") for li in page.find_elements("css selector", "#legend li")]
    assert legend == [pred.classes[k] for k in sorted(np.flatnonzero(counts), key=lambda k: (-counts[k], k))]
    latency = page.find_element("id", "latency")
    assert float(latency.get_attribute("data-total")) > 0 and " ms" in latency.text

    # click the pixel (300, 150) of the segmentation tile (Selenium's offsets count from its centre)
    canvas = page.find_element("id", "view-seg")
    rect = page.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    target = (300, 150)
    dx = (target[0] + 0.5) * rect[0] / 384 - rect[0] / 2
    dy = (target[1] + 0.5) * rect[1] / 192 - rect[1] / 2
    ActionChains(page).move_to_element_with_offset(canvas, int(round(dx)), int(round(dy))).click().perform()
    probe = page.find_element("id", "probe")
    assert probe.get_attribute("data-state") == "pinned"
    x, y = int(probe.get_attribute("data-x")), int(probe.get_attribute("data-y"))
    assert abs(x - target[0]) <= 1 and abs(y - target[1]) <= 1, (x, y)
    assert probe.get_attribute("data-class") == pred.classes[pred.seg[y, x]]
    assert float(probe.get_attribute("data-depth")) == pred.depth_png16()[y, x] / 256
    assert pred.classes[pred.seg[y, x]] in probe.text and f"{pred.depth_png16()[y, x] / 256:.2f} m" in probe.text

    # opacity 1: the overlay pixel is its class's colour; opacity 0: the image's pixel
    read = ("const s = document.getElementById('opacity'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));"
            "return Array.from(document.getElementById('view-seg').getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data)")
    image_pixel = page.execute_script("return Array.from(document.getElementById('view-image').getContext('2d')"
                                      ".getImageData(arguments[0], arguments[1], 1, 1).data)", x, y)
    assert page.execute_script(read, "1", x, y)[:3] == pred.info.palette[pred.seg[y, x]].tolist()
    assert page.execute_script(read, "0", x, y)[:3] == image_pixel[:3]
    page.execute_script(read, "0.5", x, y)

    # the depth tile: the server's colour map over --depth-range (1..100 m), as predict's panels
    depth_pixel = page.execute_script("return Array.from(document.getElementById('view-depth').getContext('2d')"
                                      ".getImageData(arguments[0], arguments[1], 1, 1).data)", x, y)
    assert depth_pixel[:3] == colorize_depth(pred.depth_png16()[y:y + 1, x:x + 1] / 256, (1.0, 100.0))[0, 0].tolist()
    page.find_element("id", "depth-fit").click()  # the untrained model's depths span less than a metre: fit the scale

    shot = tmp_path / "serve.png"
    assert page.save_screenshot(str(shot)) and shot.read_bytes().startswith(b"\x89PNG")
    keep = os.environ.get("MTDENSE_SERVE_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_several_images_are_sent_one_by_one_with_progress(page, make_image, encode, tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"frame_{i}.png")
        paths[-1].write_bytes(encode(make_image(30 + i, (80, 120))))
    _send(page, "pick-images", paths, 3, "the answers for three images")
    bar = page.find_element("id", "progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("3", "3")
    assert page.find_element("id", "progress-text").text.startswith("3 / 3")
    assert page.execute_script("return document.getElementById('view-seg').width") == 120


def test_a_video_is_sent_frame_by_frame(page, make_image, tmp_path):
    path = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 4, (128, 96))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write a VP8 .webm here (needed for a video Chromium plays)")
    for i in range(8):  # 2 s at 4 frames/s
        writer.write(make_image(40 + i, (96, 128))[..., ::-1].copy())
    writer.release()
    page.execute_script("document.getElementById('video-fps').value = '2'")
    _send(page, "pick-video", [path], 4, "the answers for 4 video frames (2 s at 2 frames/s)")
    assert page.find_element("id", "progress-text").text.startswith("frame 4 / 4")
    assert page.execute_script("return document.getElementById('view-depth').width") == 128
