"""Fixtures of the server tests: a tiny model whose outputs vary over the image, its predictor,
test images, and a live server on 127.0.0.1 (uvicorn in a thread, any free port)."""

import copy
import socket
import threading
import time

import cv2
import numpy as np
import pytest
import torch

NET_SIZE = (64, 128)


@pytest.fixture(scope="module")
def varied_model():
    """A tiny random network whose heads are scaled up, so that its labels and depths change
    across an image (the plain random one gives one class everywhere): a mixed-up answer shows."""
    import mtdense

    torch.manual_seed(0)
    model = mtdense.create_model(decoder_channels=16).eval()
    with torch.no_grad():
        model.heads["seg"][-1].weight.mul_(40.0)
        model.heads["depth"][-1].weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def predictor(varied_model):
    from mtdense.inference import Predictor

    return Predictor(varied_model, size=NET_SIZE)


def _make_image(seed: int, hw: tuple[int, int] = (72, 136)) -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB test image: smooth shapes and noise, different for each seed."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.02, 0.15, 2).tolist() + [rng.uniform(0, 6.3)]
        img[..., c] = 127 + 100 * np.sin(fx * xx + phase) * np.cos(fy * yy)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(rgb: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return buf.tobytes()


class _LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread; ``url`` is its address."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on its connections
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start within 30 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture(scope="session")
def make_image():
    """``make_image(seed, (H, W))``: a test image (H x W x 3 uint8 RGB), different for each seed."""
    return _make_image


@pytest.fixture(scope="session")
def encode():
    """``encode(rgb, ".png" | ".jpg")``: the image file's bytes."""
    return _encode


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(app) as server``: ``app`` served on ``server.url`` (127.0.0.1, a free port)."""
    return _LiveServer
