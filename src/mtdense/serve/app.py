"""The HTTP API and the page, as a FastAPI application.

    >>> from mtdense.serve import create_app
    >>> app = create_app("runs/demo/model.pth", size=(400, 1024))      # then: uvicorn.run(app)

Routes:

- ``GET /``: the page (plain HTML, CSS and JS from ``mtdense/serve/static``, no CDN: it works
  offline). ``GET /static/...``: its files.
- ``POST /predict``: one PNG or JPEG image (multipart field ``image``, or the raw body with an
  image content type) -> JSON (:mod:`mtdense.serve.results`) with ``ms``: ``forward`` (the
  network), ``queue`` (waiting for the network) and ``total`` (the whole request, from its
  first byte read to the answer encoded). ``?outputs=seg,depth,panel`` adds base64 PNGs.
- ``GET /health``: liveness; ``GET /model``: tasks, class names and colours, input size,
  backend, limits, the depth colour map; ``GET /docs``: the OpenAPI page.

Every refused upload (:class:`~mtdense.serve.uploads.BadInput`), a bad query and a bad route
answer a 4xx whose JSON ``detail`` says what was wrong and ``accepted`` what is accepted; the
server goes on. A bug answers 500 with a one-line ``detail`` and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from mtdense import __version__
from mtdense.inference import Predictor
from mtdense.serve.results import OUTPUTS, answer, parse_outputs
from mtdense.serve.uploads import IMAGE_TYPES, BadInput, Limits, decode_upload, read_body
from mtdense.serve.worker import DEFAULT_HELPERS, ModelWorker
from mtdense.viz import DEFAULT_DEPTH_RANGE, colorize_depth

__all__ = ["create_app", "backend_family", "STATIC"]

STATIC = Path(str(resources.files("mtdense.serve") / "static"))
"""The page's files, shipped in the package."""

log = logging.getLogger("mtdense.serve")

_REQUEST_BODY = {  # what /docs shows for POST /predict: the two ways to send an image
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": {"type": "string", "format": "binary",
                                                                    "description": "a PNG or JPEG file"}}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}


def backend_family(runtime) -> str:
    """What runs the network, in one word: ``fused``, ``onnx`` (ONNX Runtime), ``openvino`` or ``eager`` (PyTorch)."""
    if runtime.name == "fused":
        return "fused"
    return {"ONNX Runtime": "onnx", "OpenVINO": "openvino"}.get(runtime.engine, "eager")


def _depth_colours() -> list[list[int]]:
    """The 256 colours of the depth map (``turbo_r``, near = red), as :func:`mtdense.viz.colorize_depth` draws it."""
    lo, hi = DEFAULT_DEPTH_RANGE
    ramp = lo * (hi / lo) ** (np.arange(256) / 255.0)  # one depth per colour, log scale
    return colorize_depth(ramp[None].astype(np.float32), (lo, hi))[0].tolist()


def create_app(
    model: str | Path | Predictor,
    *,
    size: tuple[int, int] | None = None,
    backend: str | None = None,
    device: str = "cpu",
    limits: Limits | None = None,
    depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE,
    alpha: float = 0.5,
    helpers: int = DEFAULT_HELPERS,
    max_active: int = 8,
) -> FastAPI:
    """The server for ``model``.

    Args:
        model: A :class:`~mtdense.inference.Predictor`, or anything it takes (a checkpoint
            ``.pth`` / ``.safetensors`` / ``.ckpt``, an ``mtdense export`` ``.onnx``).
        size, backend, device: Passed to :class:`~mtdense.inference.Predictor` for a path.
        limits: Upload limits (default 25 MB, 40 megapixels).
        depth_range: Metres at the ends of the depth colour map (panels and the page).
        alpha: Overlay opacity of ``panel_png``.
        helpers: Helper threads that decode and encode around the network.
        max_active: Requests decoded or in the network at once; later ones wait holding only
            their bytes (bounds the memory under a burst).
    """
    limits = limits or Limits()
    if not 0 < depth_range[0] < depth_range[1]:
        raise ValueError(f"depth_range must be 0 < near < far metres, got {depth_range}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be 0..1, got {alpha}")
    if max_active < 1:
        raise ValueError(f"max_active must be >= 1, got {max_active}")
    predictor = model if isinstance(model, Predictor) else Predictor(model, device=device, size=size, backend=backend,
                                                                     max_pixels=limits.max_pixels)
    worker = ModelWorker(predictor, helpers)
    active = asyncio.Semaphore(max_active)
    depth_range = (float(depth_range[0]), float(depth_range[1]))
    info = predictor.info

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.close()

    app = FastAPI(
        title="mtdense",
        description="Semantic segmentation and depth in metres from one image. The page is at [/](/).",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.predictor, app.state.worker, app.state.limits = predictor, worker, limits

    def refuse(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail, "accepted": limits.accepted()}, status_code=status)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return refuse(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        what = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return refuse(422, f"the request is malformed ({what})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        routes = "GET /, POST /predict, GET /health, GET /model, GET /docs"
        detail = f"{request.method} {request.url.path}: {exc.detail}; the routes are {routes}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}; please report it with the image"},
                            status_code=500)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", summary="Liveness")
    async def health() -> dict:
        """``{"status": "ok"}`` while the server answers, with the images waiting for the network."""
        return {"status": "ok", "queued": worker.queued, "served": worker.served}

    @app.get("/model", summary="What the model predicts and how the server runs it")
    async def model_info() -> dict:
        """Tasks (name -> channels), classes (index, name, RGB colour), the network's input size
        (``null``: each image at its own size), the backend (``eager``, ``onnx``, ``fused``,
        ``openvino``) and its runtime, the upload limits and the depth colour map."""
        runtime = predictor.runtime
        return {
            "tasks": dict(runtime.tasks),
            "classes": [{"index": k, "name": name, "color": [int(c) for c in info.palette[k]]}
                        for k, name in enumerate(info.classes)],
            "size": list(predictor.size) if predictor.size else None,
            "backend": backend_family(runtime),
            "runtime": runtime.name,
            "engine": runtime.engine,
            "device": str(predictor.device),
            "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels},
            "outputs": list(OUTPUTS),
            "depth_colormap": {"range": list(depth_range), "scale": "log", "near": "first colour",
                               "colors": _depth_colours()},
        }

    @app.post("/predict", summary="Segmentation and depth for one image", openapi_extra={"requestBody": _REQUEST_BODY})
    async def predict(request: Request, outputs: str | None = Query(
            None, description=f"base64 PNGs to add, comma-separated: any of {', '.join(OUTPUTS)}")) -> JSONResponse:
        """Classes present (name, colour, share of pixels), depth ``min`` / ``median`` / ``max``
        in metres, the image ``size`` ``[height, width]`` and ``ms`` (``forward``: the network,
        ``queue``: waiting for it, ``total``: the whole request). With ``?outputs=``:
        ``seg_png`` (8-bit class indices), ``depth_png`` (16-bit, metres x 256) and
        ``panel_png`` (image | overlay | depth colour map), as ``mtdense predict`` writes them."""
        start = time.perf_counter()
        try:
            wanted = parse_outputs(outputs)
        except ValueError as exc:
            raise BadInput(400, str(exc)) from None
        data, name = await _upload(request, limits)
        async with active:
            def prepare() -> tuple[np.ndarray, torch.Tensor]:  # one trip to a helper thread for both
                rgb = decode_upload(data, limits, name)
                return rgb, worker.prepare(rgb)

            rgb, x = await worker.helper(prepare)
            del data
            hw = rgb.shape[:2]
            queued = time.perf_counter()
            out, forward_s = await worker.infer(x, hw)
            waited = time.perf_counter() - queued - forward_s
            del x

            def finish() -> dict:
                return answer(rgb, worker.finish(out, hw), wanted, depth_range, alpha)

            body = await worker.helper(finish)
        body["ms"] = {"forward": round(forward_s * 1e3, 3), "queue": round(max(0.0, waited) * 1e3, 3),
                      "total": round((time.perf_counter() - start) * 1e3, 3)}
        return JSONResponse(body)

    return app


async def _upload(request: Request, limits: Limits) -> tuple[bytes, str]:
    """The uploaded image's bytes and how to name it, from a multipart form or a raw body."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "image/jpg":
        kind = "image/jpeg"
    form = kind == "multipart/form-data"
    if not form and kind not in IMAGE_TYPES:
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise BadInput(415, f"{got} is not accepted; send the image as multipart/form-data (field 'image') "
                            f"or as the raw body with Content-Type {' or '.join(IMAGE_TYPES)}")
    body = await read_body(request.stream(), request.headers.get("content-length"), limits, form)
    if not form:
        return body, "the upload"
    if not body:
        raise BadInput(400, "the form is empty (0 bytes); send the image as the multipart form field 'image'")

    async def replay() -> AsyncIterator[bytes]:
        yield body

    try:
        parsed = await MultiPartParser(request.headers, replay(), max_files=4, max_fields=16).parse()
    except MultiPartException as exc:
        raise BadInput(400, f"the multipart form cannot be read ({exc.message}); send a multipart/form-data body "
                            "with the image as the field 'image'") from None
    try:
        field = parsed.get("image")
        if field is None:
            fields = ", ".join(repr(k) for k in parsed.keys()) or "none"
            raise BadInput(400, f"the form has no field 'image' (its fields: {fields}); send the image as the field 'image'")
        if isinstance(field, str):
            raise BadInput(400, "the form field 'image' is text, not a file; send the image file as the field 'image'")
        name = f"'{field.filename}'" if field.filename else "the field 'image'"
        return await field.read(), name
    finally:
        await parsed.close()
