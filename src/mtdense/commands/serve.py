"""``mtdense serve``: a model behind an HTTP API and a page that shows its predictions live."""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from mtdense.commands import limit

DESCRIPTION = """\
Serve a model on HTTP: an API for programs and a page for people, on one port.

The page (GET /): drop or pick an image and see image | segmentation overlay | depth colour
map side by side, with a legend of the classes present, a depth scale bar in metres, an overlay
opacity slider, the class and depth of the pixel under the pointer (click to keep one) and the
measured latency. A folder of images or a short video is sent frame by frame with a progress
bar. The page is plain HTML, CSS and JS shipped in the package: it works offline.

The API:
  POST /predict   one PNG or JPEG image, as the multipart form field 'image' or as the raw body
                  with Content-Type image/png or image/jpeg. Answers JSON: 'classes' (each
                  class present: index, name, colour, share of pixels), 'depth' (min, median,
                  max in metres), 'size' ([height, width]) and 'ms' (forward: the network;
                  queue: waiting for it; total: the whole request). ?outputs=seg,depth,panel
                  (any subset) adds base64 PNGs: seg_png (8-bit class indices), depth_png
                  (16-bit, metres x 256) and panel_png, the files 'mtdense predict' writes.
  GET /health     liveness;  GET /model: tasks, classes and colours, input size, backend;
  GET /docs       the OpenAPI page, to try every route from the browser.
A bad upload (empty, not a PNG or JPEG, corrupt, another content type, over --max-bytes or
--max-pixels) is answered 4xx with JSON {"detail": what was wrong, "accepted": what is}; the
server goes on.

Requests are answered concurrently: one thread runs the network, one image at a time in the
order they arrive; helper threads decode and pre-process the next images and post-process and
encode the answers of earlier ones meanwhile. Each answer is that of 'Predictor.predict' on
its own image.

MODEL is anything Predictor takes: a checkpoint (.pth / .ckpt / .safetensors) or an .onnx
file from 'mtdense export'; its classes and their colours are those it was trained with. The
server listens on 127.0.0.1 (this machine only) unless --host says otherwise; it has no
authentication, so give another --host only on a network you trust. Ctrl-C stops it
(exit status 0; 2 when refused before it starts: a bad MODEL, a taken --port)."""

EPILOG = """\
examples:
  mtdense serve runs/demo/model.pth                        # then open http://127.0.0.1:8000/
  mtdense serve runs/demo/model.pth --size 400 1024 --fused
  mtdense serve model.onnx --port 8080
  curl -F image=@street.png 'http://127.0.0.1:8000/predict?outputs=seg,depth'
  curl --data-binary @street.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="HTTP API (POST /predict) and a live page for a model",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.pth / .ckpt / .safetensors) or an .onnx file from 'mtdense export'")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free port, printed at start)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help="network input size; images are resized to it and the outputs resized back (default: each image's own size)")
    p.add_argument("--fused", action="store_true", help="run a checkpoint on the fused CPU kernel (the same as --backend fused; give --size)")
    p.add_argument("--backend", metavar="NAME", help="runtime for a checkpoint, as 'mtdense predict --backend' (default: eager)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--max-bytes", type=limit, default=None, metavar="N",
                   help="refuse uploads over N bytes (default: 25000000, 25 MB; 0: no limit)")
    p.add_argument("--max-pixels", type=limit, default=None, metavar="N",
                   help="refuse images over N pixels (H x W), by their header before decoding (default: 40000000; 0: no limit)")
    p.add_argument("--depth-range", nargs=2, type=float, default=[1.0, 100.0], metavar=("NEAR", "FAR"),
                   help="depth colour map range in metres, page and panels (default: 1 100)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of panel_png, 0..1 (default: %(default)s)")
    p.add_argument("--helpers", type=int, default=2, help="threads that decode and encode beside the network (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log (default: %(default)s; 'warning' drops the line per request)")
    p.set_defaults(func=run)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``OSError`` naming the address and the fix."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: a port is 0..65535; give another --port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address of this machine ({exc.strerror}); give an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    # with its protocol (TCP) named: asyncio turns Nagle's algorithm off only on connections of a
    # socket whose proto is IPPROTO_TCP, and with it on an answer waited about 40 ms for the
    # client's delayed acknowledgement at every request on a kept-alive connection
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fix = {errno.EADDRINUSE: "something else listens there; stop it or give another --port",
               errno.EACCES: "ports below 1024 need privileges; give a --port of 1024 or more",
               errno.EADDRNOTAVAIL: "not an address of this machine; give --host 127.0.0.1 or one of its addresses"}
        raise OSError(exc.errno, f"{host}:{port}: cannot listen ({exc.strerror}); {fix.get(exc.errno, 'give another --host or --port')}") from None
    sock.listen(128)
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from mtdense.inference import Predictor
    from mtdense.serve import Limits, create_app
    from mtdense.serve.uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

    backend = args.backend
    if args.fused:
        if backend not in (None, "fused"):
            raise ValueError(f"--fused is --backend fused; it cannot be combined with --backend {backend}")
        backend = "fused"
    limits = Limits(max_bytes=DEFAULT_MAX_BYTES if args.max_bytes is None else args.max_bytes,
                    max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels)
    sock = bind(args.host, args.port)  # before the model loads: a taken port fails at once
    try:
        predictor = Predictor(args.model, device=args.device, size=tuple(args.size) if args.size else None, backend=backend,
                              max_pixels=limits.max_pixels)
        app = create_app(predictor, limits=limits, depth_range=tuple(args.depth_range), alpha=args.alpha, helpers=args.helpers)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"mtdense serve: {args.model} ({predictor.runtime.name}) on http://{shown}:{port}/ "
              f"(API docs: http://{shown}:{port}/docs); Ctrl-C stops it", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5))
        serve_in_main_thread(server, sock, app.state.worker)
    finally:
        sock.close()
    if not server.started:
        print("mtdense serve: error: the server did not start (see the log above)", file=sys.stderr)
        return 2
    print("mtdense serve: stopped", flush=True)
    return 0


def serve_in_main_thread(server, sock: socket.socket, worker) -> None:
    """Run the network in this thread (the one that loaded the model: see
    :mod:`mtdense.serve.worker`) and uvicorn's event loop in another, until the server stops.

    The first Ctrl-C (or SIGTERM) asks uvicorn to stop: it answers the requests under way, then
    ends; the second leaves at once (``KeyboardInterrupt``).
    """
    import signal
    import threading

    from mtdense.serve.worker import lower_priority

    def serve_http() -> None:
        lower_priority()  # as the helpers: where the cores are all taken, the network comes first
        server.run(sockets=[sock])

    http = threading.Thread(target=serve_http, name="mtdense-serve-http", daemon=True)
    asked = []

    def stop(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker.start(thread=False)
    try:
        http.start()
        worker.run(until=lambda: not http.is_alive())  # returns when uvicorn has shut down (it closes the worker)
    finally:
        server.should_exit = True
        http.join(timeout=30)
        worker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
