"""``mtdense serve``: the HTTP API and the page that show a model's predictions live.

- :mod:`~mtdense.serve.app`: the FastAPI application (:func:`create_app`): ``POST /predict``,
  ``GET /health``, ``GET /model``, ``GET /docs`` and the page at ``GET /``.
- :mod:`~mtdense.serve.uploads`: what an upload may be, checked before any network work.
- :mod:`~mtdense.serve.worker`: one thread runs the network, helper threads decode and encode.
- :mod:`~mtdense.serve.results`: one prediction as the JSON answer.
- ``static/``: the page (plain HTML, CSS and JS, shipped in the package; no CDN, no build step).

    >>> import uvicorn
    >>> from mtdense.serve import create_app
    >>> uvicorn.run(create_app("runs/demo/model.pth", size=(400, 1024)), host="127.0.0.1", port=8000)
"""

from mtdense.serve.app import create_app
from mtdense.serve.uploads import Limits

__all__ = ["create_app", "Limits"]
