"""The data a recipe trains on: check ``data.root``, generate the synthetic city if asked.

Nothing is ever removed: a folder that holds something other than the city the recipe would
generate is refused, with the way to train on it as it is or to generate elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtdense.data.synthetic import city_settings, generate_city
from mtdense.train.schema import Recipe, RecipeError, SyntheticDataConfig, validate_paths

__all__ = ["prepare_data"]


def _as_recipe_keys(city: dict[str, Any]) -> dict[str, Any]:
    """A generated city's settings (see :func:`mtdense.data.synthetic.city_settings`) as ``data.generate`` keys.

    A city's test frames, which a recipe never generates, appear as ``n_test``.
    """
    frames = city.get("frames") or {}
    return {"n_train": frames.get("train"), "n_val": frames.get("val"), "n_test": frames.get("test", 0),
            "size": city.get("size"), "seed": city.get("seed")}


def _refuse(root: Path, what: str) -> RecipeError:
    return RecipeError(
        f"data.root: {str(root)!r} {what}; it is left as it is. To train on it as it is, --set data.generate=null; "
        f"to generate the recipe's city, give an empty or new folder: --set data.root=DIR"
    )


def _check_for_generation(root: Path, wanted: SyntheticDataConfig) -> bool:
    """Whether ``root`` already holds exactly the city of ``wanted``; ``False``: nothing there yet.

    Raises:
        RecipeError: ``root`` is a file, a generated city with other settings or a non-empty folder.
    """
    if not root.exists():
        return False
    if not root.is_dir():
        raise _refuse(root, "is a file, not a folder")
    city = city_settings(root)
    if city is not None:
        have, want = _as_recipe_keys(city), {**wanted.model_dump(), "n_test": 0}
        differ = [k for k in want if have.get(k) != want[k]]
        if not differ:
            return True
        settings = ", ".join(f"{k} {have.get(k)} (the recipe: {want[k]})" for k in differ)
        raise _refuse(root, f"holds a synthetic city generated with other settings: {settings}")
    entries = sorted(p.name for p in root.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise _refuse(root, f"is not empty ({shown}) and holds no finished synthetic city")
    return False


def prepare_data(recipe: Recipe, progress: bool = True) -> Path:
    """Make sure ``data.root`` holds the data; generate the synthetic city if the recipe asks.

    With ``data.generate`` set, a folder that holds exactly that city is used as it is, a new or
    empty one gets the city; anything else is refused, never replaced.

    Returns:
        The dataset root.

    Raises:
        RecipeError: ``data.root`` unset or missing; or, with ``data.generate``, a folder that
            holds something other than the recipe's city (the message says how to go on).
    """
    validate_paths(recipe)
    root = Path(str(recipe.data.root)).expanduser()
    g = recipe.data.generate
    if g is not None and not _check_for_generation(root, g):
        generate_city(root, g.n_train, g.n_val, size=(g.size[0], g.size[1]), seed=g.seed, progress=progress)
    return root
