"""Requests per second and latency of ``mtdense serve`` under 1, 4 and 16 concurrent clients, next to
the bare model in the same run.

Starts ``mtdense serve MODEL --size H W`` on 127.0.0.1 (a free port) in a child process, then for
each number of clients sends the same image (a JPEG at the network's size, as the raw body) from
that many threads, each on its own keep-alive connection, until ``--requests`` answers or
``--seconds`` have passed, whichever comes first. Latency is the client's: from sending the
request to the whole answer read. Each level starts after one warm-up request per client. The
clients turn Nagle's algorithm off (TCP_NODELAY), as browsers and curl do.

The bare model is ``Predictor.predict`` on the decoded image in this process (resize, normalise,
the network, labels and metres at the image's size), timed back to back while the server idles,
before the first level and after each (``--bare-runs`` runs or ``--seconds``, whichever comes
first). A level's "ratio" is its served requests/s divided by the bare images/s (1000 / median
ms) of the runs right before and right after it, so a neighbour's load that comes and goes
skews both alike. The server adds the upload, decoding, class shares, depth stats and
the JSON on top, overlapped with the network by its helper threads.

    python benchmarks/serve_load.py                                  # random default model, 400 x 1024
    python benchmarks/serve_load.py runs/demo/model.pth --size 400 1024 --fused
    python benchmarks/serve_load.py --size 128 256 --requests 40 --seconds 10   # a quick check

On a shared machine the load average (printed before and after) says how far to trust the numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A street-sized test image (H x W x 3 uint8 RGB): smooth gradients, boxes and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200, y / h * 200, (x + y) / (w + h) * 255], axis=-1)
    for _ in range(25):
        y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        img[y0 : y0 + int(rng.integers(8, h // 3)), x0 : x0 + int(rng.integers(8, w // 3))] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def time_bare(predictor, rgb: np.ndarray, runs: int, seconds: float) -> list[float]:
    """Milliseconds of ``predictor.predict(rgb)``, back to back (after 3 warm-up runs)."""
    for _ in range(3):
        predictor.predict(rgb)
    times, end = [], time.monotonic() + seconds
    while len(times) < runs and time.monotonic() < end:
        start = time.perf_counter()
        predictor.predict(rgb)
        times.append((time.perf_counter() - start) * 1e3)
    return times


class Server:
    """``mtdense serve`` in a child process on 127.0.0.1, any free port."""

    def __init__(self, model: str, size: tuple[int, int], backend: str | None):
        cmd = [sys.executable, "-m", "mtdense.cli", "serve", model, "--port", "0", "--size", str(size[0]), str(size[1]),
               "--log-level", "warning"] + (["--backend", backend] if backend else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise SystemExit(f"serve_load: the server did not start (its output: {line.strip()!r}); run the command by hand: {' '.join(cmd)}")
        address = line.split("http://")[1].split("/")[0]
        self.host, self.port = address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1])
        deadline = time.monotonic() + 120
        while True:
            try:
                self.get("/health")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("serve_load: the server did not answer /health within 120 s") from None
                time.sleep(0.1)

    def get(self, path: str) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connect(server: Server) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle's algorithm off, as browsers and curl open them: http.client
    sends the headers and the body in two writes, and with Nagle on the body would wait for the
    server's delayed acknowledgement of the headers (about 40 ms on Linux) at every request."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def load(server: Server, body: bytes, clients: int, requests: int, seconds: float) -> dict:
    """Send ``body`` from ``clients`` threads until ``requests`` answers or ``seconds``; the level's figures."""
    latencies: list[float] = []
    forward: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    sent = [0]
    headers = {"Content-Type": "image/jpeg"}
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def post(conn: http.client.HTTPConnection) -> tuple[http.client.HTTPConnection, int, bytes]:
        for attempt in (1, 2):
            try:
                conn.request("POST", "/predict", body, headers)
                response = conn.getresponse()
                return conn, response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                # the server closes a keep-alive connection idle for 5 s (a client waiting for the
                # others' warm-up): open a new one, as a browser would
                conn.close()
                if attempt == 2:
                    raise
                conn = connect(server)
        raise AssertionError("unreachable")

    def client() -> None:
        conn = connect(server)
        try:
            conn, _, _ = post(conn)  # warm-up: the connection and one answer
            barrier.wait()
            while True:
                with lock:
                    if sent[0] >= requests or time.monotonic() > deadline[0]:
                        return
                    sent[0] += 1
                start = time.perf_counter()
                try:
                    conn, status, answer = post(conn)
                except OSError as exc:
                    status, answer = 0, str(exc).encode()
                ms = (time.perf_counter() - start) * 1e3
                with lock:
                    if status == 200:
                        latencies.append(ms)
                        forward.append(json.loads(answer)["ms"]["forward"])
                    else:
                        failures.append(f"{status}: {answer[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds + 60  # until all have warmed up
    barrier.wait()
    start = time.perf_counter()
    deadline[0] = time.monotonic() + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "answered": len(latencies), "failed": len(failures), "wall_s": wall,
            "rps": len(latencies) / wall if wall > 0 else float("nan"), "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95), "p99": _percentile(latencies, 99),
            "forward": statistics.median(forward) if forward else float("nan"), "first_failure": failures[0] if failures else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("model", nargs="?", help="checkpoint or .onnx (default: a random default model: speed does not depend on weights)")
    parser.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"), help="network input and image size (default: 400 1024)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per level, comma-separated (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=200, help="answers per level at most (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per level at most (default: %(default)s)")
    parser.add_argument("--bare-runs", type=int, default=30, help="bare-model runs before and after the levels, each (default: %(default)s)")
    parser.add_argument("--backend", help="runtime for a checkpoint, as 'mtdense serve --backend' (default: eager)")
    parser.add_argument("--fused", action="store_true", help="the same as --backend fused")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    backend = "fused" if args.fused else args.backend
    size = (int(args.size[0]), int(args.size[1]))

    from mtdense import create_model, save_checkpoint
    from mtdense.inference import Predictor

    with tempfile.TemporaryDirectory(prefix="mtdense-serve-load-") as tmp:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = str(save_checkpoint(create_model().eval(), Path(tmp) / "random.pth"))
        ok, jpeg = cv2.imencode(".jpg", make_image(*size)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        body = jpeg.tobytes()
        rgb = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1].copy()  # what the server decodes
        load_before = os.getloadavg()[0]
        predictor = Predictor(model, size=size, backend=backend)
        server = Server(model, size, backend)
        try:
            info = server.get("/model")
            bares = [time_bare(predictor, rgb, args.bare_runs, args.seconds)]  # before each level and after the last
            rows = []
            for c in levels:
                rows.append(load(server, body, c, args.requests, args.seconds))
                bares.append(time_bare(predictor, rgb, args.bare_runs, args.seconds))
        finally:
            server.stop()
        load_after = os.getloadavg()[0]

    bare = [t for b in bares for t in b]
    bare_ms = statistics.median(bare)
    bare_rps = 1e3 / bare_ms
    for i, r in enumerate(rows):  # each level against the bare model timed right before and right after it
        r["bare_rps"] = 1e3 / statistics.median(bares[i] + bares[i + 1])
    print(f"mtdense serve under load: {Path(str(model)).name if args.model else 'random default model'}, {size[0]}x{size[1]}, "
          f"backend {info['backend']} ({info['runtime']}), image {len(body) / 1e3:.0f} kB JPEG as the raw body, "
          f"{os.cpu_count()} CPUs, PyTorch threads {torch.get_num_threads()}, load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"bare model (Predictor.predict, {len(bare)} runs in all): p50 {bare_ms:.1f} ms, p95 {_percentile(bare, 95):.1f} ms "
          f"-> {bare_rps:.2f} images/s")
    print()
    print("| clients | answered | req/s | p50 ms | p95 ms | p99 ms | server forward p50 ms | bare images/s around it | ratio to bare |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['answered']} | {r['rps']:.2f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
              f"{r['forward']:.1f} | {r['bare_rps']:.2f} | {r['rps'] / r['bare_rps']:.2f} |")
    failed = [r for r in rows if r["failed"]]
    for r in failed:
        print(f"{r['clients']} clients: {r['failed']} failed requests, the first: {r['first_failure']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
