"""What ``POST /predict`` accepts, checked before any network work.

An upload is one PNG or JPEG image: the multipart form field ``image``, or the raw request body
with ``Content-Type: image/png`` or ``image/jpeg``. Everything else is refused with a
:class:`BadInput` that carries the HTTP status and a message naming what was wrong and what is
accepted:

- 400: an empty body, a form without the field ``image``, bytes that are not a PNG or JPEG,
  a corrupt or truncated image (decoded by :func:`mtdense.data.image.read_image`, the strict
  decoder ``mtdense predict`` uses, which refuses a JPEG whose data ends early).
- 413: a body over :attr:`Limits.max_bytes` (refused by its ``Content-Length`` before it is
  read, or as soon as the bytes read pass the limit), an image over :attr:`Limits.max_pixels`
  (refused by its header before it is decoded).
- 415: a ``Content-Type`` other than ``multipart/form-data``, ``image/png`` or ``image/jpeg``.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from mtdense.data.image import read_image

__all__ = ["BadInput", "Limits", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "read_body", "image_bytes", "decode_upload",
           "IMAGE_TYPES"]

DEFAULT_MAX_BYTES = 25_000_000
"""The largest upload ``mtdense serve`` accepts by default: 25 MB."""
DEFAULT_MAX_PIXELS = 40_000_000
"""The largest image (H x W) ``mtdense serve`` accepts by default: 40 megapixels."""

IMAGE_TYPES = ("image/png", "image/jpeg")
"""Content types of a raw-body upload (``image/jpg`` is read as ``image/jpeg``)."""

_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers on top of the image's bytes
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


class BadInput(Exception):
    """An upload the server refuses: ``status`` (4xx) and a message naming what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def _mp(n: int) -> str:
    return f"{n / 1e6:.3g} megapixels"


@dataclass(frozen=True)
class Limits:
    """How large an upload may be (``0``: no limit).

    Attributes:
        max_bytes: The largest upload in bytes (the image file itself).
        max_pixels: The largest image, H x W pixels.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.max_pixels < 0:
            raise ValueError(f"limits must be >= 0 (0: no limit), got max_bytes={self.max_bytes}, max_pixels={self.max_pixels}")

    def accepted(self) -> str:
        """What an upload must be, in one sentence (every refusal ends with it)."""
        limits = [f"at most {_mb(self.max_bytes)}" if self.max_bytes else "",
                  f"at most {_mp(self.max_pixels)}" if self.max_pixels else ""]
        size = " and ".join(x for x in limits if x)
        return ("accepted: one PNG or JPEG image, as the multipart form field 'image' or as the raw body with "
                f"Content-Type image/png or image/jpeg{', ' + size if size else ''}")


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limits: Limits, form: bool) -> bytes:
    """The request body, refused (413) as soon as it is known to be over :attr:`Limits.max_bytes`.

    Args:
        chunks: The body as it arrives (``request.stream()``).
        content_length: The ``Content-Length`` header, if sent: a body it announces over the
            limit is refused before a byte is read.
        form: A multipart body, allowed :data:`_FORM_OVERHEAD` bytes of boundaries on top.
    """
    cap = limits.max_bytes + (_FORM_OVERHEAD if form else 0) if limits.max_bytes else 0
    too_large = f"the upload is over the limit of {_mb(limits.max_bytes)}"
    if cap and content_length and content_length.strip().isdigit() and int(content_length) > cap:
        raise BadInput(413, f"{too_large} (Content-Length {int(content_length)} bytes); send a smaller image "
                            "(resize it or save it as JPEG)")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if cap and size > cap:
            raise BadInput(413, f"{too_large}; send a smaller image (resize it or save it as JPEG)")
        parts.append(chunk)
    return b"".join(parts)


def image_bytes(data: bytes, name: str, limits: Limits) -> str:
    """Check an upload's bytes before decoding; returns its format, ``"png"`` or ``"jpeg"``.

    Raises:
        BadInput: empty (400), over :attr:`Limits.max_bytes` (413), not a PNG or JPEG (400).
    """
    if not data:
        raise BadInput(400, f"{name} is empty (0 bytes); send the image's bytes")
    if limits.max_bytes and len(data) > limits.max_bytes:
        raise BadInput(413, f"{name} is {_mb(len(data))}, over the limit of {_mb(limits.max_bytes)}; "
                            "send a smaller image (resize it or save it as JPEG)")
    if data.startswith(_PNG):
        return "png"
    if data.startswith(_JPEG):
        return "jpeg"
    head = data[:8].hex(" ")
    raise BadInput(400, f"{name} is not a PNG or JPEG image (its first bytes are {head}); send a PNG or JPEG file")


def _header_size(data: bytes, name: str) -> tuple[int, int] | None:
    """``(W, H)`` from the image's header without decoding its pixels; ``None`` where Pillow
    cannot read the header (the strict decoder then says what is wrong)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:  # over twice Pillow's own limit: far over any sane limit
        raise BadInput(413, f"{name} has more pixels than Pillow will open (over 179 megapixels); "
                            "send a smaller image") from None
    except (OSError, SyntaxError, ValueError):
        return None


def _check_pixels(w: int, h: int, name: str, limits: Limits) -> None:
    if limits.max_pixels and w * h > limits.max_pixels:
        raise BadInput(413, f"{name} is {w} x {h} = {_mp(w * h)}, over the limit of {_mp(limits.max_pixels)}; "
                            "send a smaller image (resize it)")


def decode_upload(data: bytes, limits: Limits, name: str = "the upload") -> np.ndarray:
    """An upload's bytes -> ``H x W x 3`` uint8 RGB, or :class:`BadInput` saying why not.

    The size is read from the header first, so an image over :attr:`Limits.max_pixels` is refused
    without decoding it. The pixels are decoded by :func:`mtdense.data.image.read_image` (grey
    and 16-bit images converted, the EXIF orientation applied, a truncated file refused), from a
    private temporary file that is removed at once.

    Args:
        data: The file's bytes.
        limits: The :class:`Limits`.
        name: How messages name the upload (``'street.png'``, ``the upload``).
    """
    kind = image_bytes(data, name, limits)
    wh = _header_size(data, name)
    if wh is not None:
        _check_pixels(*wh, name, limits)
    fd, tmp = tempfile.mkstemp(prefix="mtdense-serve-", suffix=".png" if kind == "png" else ".jpg")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            rgb = read_image(tmp)
        except ValueError as exc:  # its message names the temporary file: name the upload instead
            message = str(exc).replace(tmp, name)
            raise BadInput(400, message.replace("replace it with a good copy, or delete it", "send a good copy")
                                .replace("replace it with a complete copy", "send a complete copy")) from None
    finally:
        os.unlink(tmp)
    _check_pixels(rgb.shape[1], rgb.shape[0], name, limits)
    return rgb
