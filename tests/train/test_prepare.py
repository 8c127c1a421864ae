"""Data preparation generates the synthetic city into a new or empty folder, reuses the same city,
and never removes anything else."""

import pytest

from mtdense.cli import main
from mtdense.data.synthetic import city_settings, generate_city
from mtdense.train.prepare import prepare_data
from mtdense.train.schema import RecipeError, recipe_from_dict

CITY = {"n_train": 2, "n_val": 1, "size": [64, 128], "seed": 0}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare") / "city"
    generate_city(root, CITY["n_train"], CITY["n_val"], size=tuple(CITY["size"]), seed=CITY["seed"], progress=False, workers=0)
    return root


def _recipe(tiny_recipe, root, **generate):
    d = tiny_recipe(root)
    d["data"]["generate"] = {**CITY, **generate}
    return recipe_from_dict(d)


def _snapshot(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_the_recipes_city_is_generated_once_then_reused(tiny_recipe, tmp_path):
    root = tmp_path / "new"
    root.mkdir()  # empty: the city goes there
    recipe = _recipe(tiny_recipe, root, n_train=1)
    assert prepare_data(recipe, progress=False) == root
    assert city_settings(root)["frames"] == {"train": 1, "val": 1, "test": 0}
    before = _snapshot(root)
    assert prepare_data(recipe, progress=False) == root
    assert _snapshot(root) == before


def test_a_city_with_other_settings_is_refused_and_kept(tiny_recipe, city):
    before = _snapshot(city)
    assert prepare_data(_recipe(tiny_recipe, city), progress=False) == city  # exactly the recipe's city
    with pytest.raises(RecipeError) as info:
        prepare_data(_recipe(tiny_recipe, city, n_train=3, seed=1), progress=False)
    message = str(info.value)
    assert str(city) in message and "\n" not in message
    assert "n_train 2 (the recipe: 3)" in message and "seed 0 (the recipe: 1)" in message and "n_val" not in message
    assert "--set data.generate=null" in message and "--set data.root=" in message
    assert _snapshot(city) == before


@pytest.mark.parametrize("content", ["notes.txt", "leftImg8bit/train/x.png"])
def test_a_folder_that_is_not_a_generated_city_is_refused(tiny_recipe, tmp_path, content):
    root = tmp_path / "mine"
    (root / content).parent.mkdir(parents=True, exist_ok=True)
    (root / content).write_text("keep me")
    with pytest.raises(RecipeError, match=r"data\.root: .*mine.* is not empty \((leftImg8bit|notes\.txt)\).*data\.generate=null"):
        prepare_data(_recipe(tiny_recipe, root), progress=False)
    assert (root / content).read_text() == "keep me"


def test_train_command_refuses_to_generate_over_another_city(city, tmp_path, capsys):
    before = _snapshot(city)
    out = tmp_path / "run"
    assert main(["train", "synthetic_demo", "--out", str(out), "--set", f"data.root={city}", "stages.0.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert str(city) in err and "size [64, 128] (the recipe: [160, 320])" in err and "data.generate=null" in err
    assert _snapshot(city) == before and not out.exists()
