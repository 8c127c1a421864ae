"""The HTTP API of ``mtdense serve``: answers equal ``Predictor.predict``, every bad input is a 4xx
that says what was wrong and what is accepted (and the next good request is answered), and 50
concurrent requests each get the answer of their own image."""

import base64
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mtdense.outputs import image_files
from mtdense.serve import Limits, create_app


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor)) as c:
        yield c


@pytest.fixture(scope="module")
def small_client(predictor):
    """A server with small limits: 20 kB and 10 000 pixels."""
    with TestClient(create_app(predictor, limits=Limits(max_bytes=20_000, max_pixels=10_000))) as c:
        yield c


def _png(b64: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)


def _check_answer(body: dict, rgb: np.ndarray, pred, panel: bool = False) -> None:
    """``body`` is the answer for ``rgb``, whose ``Predictor.predict`` is ``pred``."""
    h, w = rgb.shape[:2]
    assert body["size"] == [h, w]
    seg, depth = _png(body["seg_png"]), _png(body["depth_png"])
    assert seg.dtype == np.uint8 and depth.dtype == np.uint16
    np.testing.assert_array_equal(seg, pred.seg)
    np.testing.assert_array_equal(depth, pred.depth_png16())
    counts = np.bincount(pred.seg.ravel(), minlength=len(pred.classes))
    present = {c["name"]: c["share"] for c in body["classes"]}
    assert present == {pred.classes[k]: pytest.approx(counts[k] / seg.size, abs=1e-6) for k in np.flatnonzero(counts)}
    assert [c["share"] for c in body["classes"]] == sorted((c["share"] for c in body["classes"]), reverse=True)
    for c in body["classes"]:
        assert c["color"] == pred.info.palette[c["index"]].tolist()
    assert body["depth"]["min"] == pytest.approx(float(pred.depth.min()), abs=1e-4)
    assert body["depth"]["median"] == pytest.approx(float(np.median(pred.depth)), abs=1e-4)
    assert body["depth"]["max"] == pytest.approx(float(pred.depth.max()), abs=1e-4)
    assert 0 < body["ms"]["forward"] <= body["ms"]["total"]
    if panel:
        np.testing.assert_array_equal(_png(body["panel_png"]), image_files(rgb, pred)["panel"])


def test_multipart_png_answer_equals_predictor_predict(client, predictor, make_image, encode):
    rgb = make_image(1)
    r = client.post("/predict?outputs=seg,depth,panel", files={"image": ("street.png", encode(rgb), "image/png")})
    assert r.status_code == 200, r.text
    pred = predictor.predict(rgb)
    assert len(np.unique(pred.seg)) >= 3  # the varied model: a mixed-up answer would show
    _check_answer(r.json(), rgb, pred, panel=True)


def test_raw_jpeg_body_answer_equals_predictor_predict_on_the_file(client, predictor, make_image, encode, tmp_path):
    data = encode(make_image(2, (90, 150)), ".jpg")
    (tmp_path / "a.jpg").write_bytes(data)
    r = client.post("/predict?outputs=depth,seg", content=data, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "panel_png" not in body
    pred = predictor.predict(tmp_path / "a.jpg")  # decoded as predict decodes files
    _check_answer(body, predictor.read_image(tmp_path / "a.jpg"), pred)


def test_without_outputs_only_the_summary(client, make_image, encode):
    r = client.post("/predict", content=encode(make_image(3)), headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    assert set(r.json()) == {"size", "classes", "depth", "ms"}
    assert set(r.json()["ms"]) == {"forward", "queue", "total"}


def test_health_model_and_docs(client, predictor):
    assert client.get("/health").json()["status"] == "ok"
    model = client.get("/model").json()
    assert model["tasks"] == {"seg": 19, "depth": 1}
    assert [c["name"] for c in model["classes"]] == list(predictor.info.classes)
    assert [c["color"] for c in model["classes"]] == predictor.info.palette.tolist()
    assert model["size"] == [64, 128] and model["backend"] == "eager" and model["runtime"] == "eager"
    assert len(model["depth_colormap"]["colors"]) == 256
    assert "swagger" in client.get("/docs").text.lower()
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(body)


def test_page_and_its_files_are_served_from_the_package(client):
    from mtdense.serve.app import STATIC

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page.text
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.content == (STATIC / name).read_bytes()
    for path in STATIC.iterdir():  # works offline: nothing fetched from elsewhere
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path.name


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that announces ``w x h`` pixels and holds none (a tiny file, a huge image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _bad_inputs(encode, make_image):
    png, jpg = encode(make_image(5)), encode(make_image(5), ".jpg")
    raw = lambda data, ctype: {"content": data, "headers": {"Content-Type": ctype}}  # noqa: E731
    form = lambda data, field="image": {"files": {field: ("x.png", data, "image/png")}}  # noqa: E731
    return [
        ("corrupt png", raw(png[:8] + b"\x00" * 200, "image/png"), 400, "cannot decode"),
        ("truncated png", raw(png[: len(png) // 2], "image/png"), 400, "cannot decode"),
        ("truncated jpeg", form(jpg[: len(jpg) // 2]), 400, "truncated"),
        ("text as png", raw(b"hello, this is no image", "image/png"), 400, "not a PNG or JPEG"),
        ("gif bytes", raw(b"GIF89a" + b"\x00" * 40, "image/png"), 400, "not a PNG or JPEG"),
        ("empty body", raw(b"", "image/png"), 400, "empty"),
        ("empty form field", form(b""), 400, "empty"),
        ("form without image", form(png, field="file"), 400, "no field 'image'"),
        ("form field as text", {"data": {"image": "not a file"}, "files": {"other": ("o.txt", b"x", "text/plain")}}, 400, "is text"),
        ("wrong content type", raw(png, "text/plain"), 415, "text/plain"),
        ("gif content type", raw(png, "image/gif"), 415, "image/gif"),
        ("json content type", {"json": {"image": "x"}}, 415, "application/json"),
        ("no content type", {"content": png}, 415, "no Content-Type"),
        ("image over 40 megapixels", raw(_png_header_only(8000, 6000), "image/png"), 413, "over the limit of 40 megapixels"),
        ("image beyond Pillow", raw(_png_header_only(20000, 20000), "image/png"), 413, "more pixels"),
        ("unknown output", {**raw(png, "image/png"), "params": {"outputs": "seg,masks"}}, 400, "unknown output 'masks'"),
    ]


def test_every_bad_input_is_a_4xx_that_says_what_and_what_is_accepted(client, predictor, make_image, encode):
    good = make_image(6)
    pred = predictor.predict(good)
    for name, kwargs, status, words in _bad_inputs(encode, make_image):
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        body = r.json()
        assert words in body["detail"], (name, body)
        assert "PNG or JPEG" in body["accepted"] and "form field 'image'" in body["accepted"], name
        after = client.post("/predict?outputs=seg,depth", files={"image": ("good.png", encode(good), "image/png")})
        assert after.status_code == 200, (name, after.text)
        _check_answer(after.json(), good, pred)


def test_limits_refuse_large_uploads_by_bytes_and_by_pixels(small_client, predictor, make_image, encode):
    big = encode(make_image(7, (200, 200)))  # noise: over 20 kB as PNG
    assert len(big) > 20_000
    cases = [
        ({"content": big, "headers": {"Content-Type": "image/png"}}, "Content-Length"),  # refused unread
        ({"files": {"image": ("big.png", big, "image/png")}}, "over the limit of 0.02 MB"),
        ({"content": encode(make_image(8, (120, 100)), ".jpg"), "headers": {"Content-Type": "image/jpeg"}}, "100 x 120 = 0.012 megapixels"),
    ]
    for kwargs, words in cases:
        r = small_client.post("/predict", **kwargs)
        assert r.status_code == 413, r.text
        assert words in r.json()["detail"] and "at most 0.02 MB and at most 0.01 megapixels" in r.json()["accepted"]
    ok = make_image(9, (64, 100))  # 6400 pixels
    r = small_client.post("/predict?outputs=seg,depth", files={"image": ("ok.jpg", encode(ok, ".jpg"), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == [64, 100]


def test_bad_routes_and_methods_answer_json(client):
    r = client.get("/predict")
    assert r.status_code == 405 and "POST /predict" in r.json()["detail"]
    r = client.get("/nothing-here")
    assert r.status_code == 404 and "GET /model" in r.json()["detail"]


def test_50_concurrent_requests_each_get_their_own_answer(predictor, make_image, encode, live_server):
    import httpx

    images = [make_image(100 + i, (48 + i, 96 + 2 * i)) for i in range(50)]  # each its own size and content
    expected = predictor.predict(images)
    app = create_app(predictor)
    calls, busy, most = [], [0], [0]
    lock = threading.Lock()
    infer = predictor.infer

    def counting_infer(x, out_size=None):  # the network must run one image at a time
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
            calls.append(tuple(out_size))
        try:
            return infer(x, out_size)
        finally:
            with lock:
                busy[0] -= 1

    app.state.worker.predictor = type("Counted", (), {"__getattr__": lambda s, n: getattr(predictor, n),
                                                      "infer": staticmethod(counting_infer)})()
    start = threading.Barrier(50)

    def send(i: int) -> dict:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            start.wait(timeout=30)  # all 50 at once
            r = http.post("/predict?outputs=seg,depth", content=encode(images[i]), headers={"Content-Type": "image/png"})
            assert r.status_code == 200, r.text
            return r.json()

    with live_server(app) as server, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, range(50)))
    for rgb, pred, body in zip(images, expected, answers):
        _check_answer(body, rgb, pred)
    assert most[0] == 1 and len(calls) == 50
    assert sorted(calls) == sorted(rgb.shape[:2] for rgb in images)


def test_serve_command_starts_answers_and_stops_on_ctrl_c(ckpt, make_image, encode):
    import httpx

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mtdense.cli", "serve", str(ckpt), "--port", "0", "--size", "64", "128",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" on ")[1].split("/ ")[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/health").json()["status"] == "ok"
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not answer within 30 s"
                time.sleep(0.1)
        r = httpx.post(f"{url}/predict", files={"image": ("a.png", encode(make_image(11)), "image/png")})
        assert r.status_code == 200 and r.json()["size"] == [72, 136]
        assert httpx.get(f"{url}/model").json()["size"] == [64, 128]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_command_refuses_a_taken_port_in_one_line(ckpt, capsys):
    import socket

    from mtdense.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(ckpt), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"mtdense serve: error: 127.0.0.1:{port}: cannot listen" in err and "another --port" in err
    assert main(["serve", str(ckpt), "--fused", "--backend", "ort"]) == 2
    assert "--fused is --backend fused" in capsys.readouterr().err


def test_an_onnx_export_is_served_with_its_classes_and_answers_as_its_predictor(varied_model, make_image, encode, tmp_path):
    from mtdense.deploy.onnx import export_onnx
    from mtdense.inference import Predictor

    path = export_onnx(varied_model, tmp_path / "tiny.onnx", size=(64, 128), deploy=False, dynamic=False)  # the quick export
    with TestClient(create_app(path, size=(64, 128))) as client:
        model = client.get("/model").json()
        assert model["backend"] == "onnx" and model["engine"] == "ONNX Runtime"
        rgb = make_image(12)
        r = client.post("/predict?outputs=seg,depth", files={"image": ("a.png", encode(rgb), "image/png")})
        assert r.status_code == 200, r.text
    predictor = Predictor(path, size=(64, 128))
    assert [c["name"] for c in model["classes"]] == list(predictor.info.classes)
    _check_answer(r.json(), rgb, predictor.predict(rgb))


def test_the_listening_socket_names_tcp_so_answers_are_not_held_back_by_nagle():
    import socket

    from mtdense.commands.serve import bind

    sock = bind("127.0.0.1", 0)  # asyncio sets TCP_NODELAY only on connections of a socket whose proto is TCP
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
