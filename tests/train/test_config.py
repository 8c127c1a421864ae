"""The typed-config loader: YAML, --set overrides, and errors that name the file and the key path."""

from typing import Annotated

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mtdense.train.config import ConfigError, FieldError, Float, apply_overrides, key_path, load_config, one_of, validate
from mtdense.train.schema import RecipeError, load_recipe


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    size: list[Annotated[int, Field(ge=1)]] = [1]
    rate: Float = 0.5
    kind: Annotated[str, one_of(("a", "b"), "kind")] = "a"


class _Settings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    parts: list[_Part]
    flag: bool = False
    limit: Annotated[int, Field(gt=0)] | Annotated[Float, Field(gt=0)] | None = None
    path: bool | str = True
    low: Float = 0.0
    high: Float = 1.0

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise FieldError("low", f"must be <= high ({self.high}), got {self.low}")
        return self


def test_overrides_are_dotted_and_yaml_parsed():
    d = {"stages": [{"name": "a", "epochs": 1}], "data": {"root": "/x"}}
    out = apply_overrides(d, ["stages.0.epochs=2", "data.root=/y", "stages.0.size=[200, 512]", "model.pretrained=false"])
    assert out["stages"][0] == {"name": "a", "epochs": 2, "size": [200, 512]}
    assert out["data"]["root"] == "/y" and out["model"]["pretrained"] is False
    assert d["stages"][0]["epochs"] == 1  # the input is untouched
    with pytest.raises(RecipeError, match="stages.3"):
        apply_overrides(d, ["stages.3.epochs=2"])
    with pytest.raises(RecipeError, match="key=value"):
        apply_overrides(d, ["stages.0.epochs"])
    with pytest.raises(ConfigError, match=r"'data.root' is '/x', not a mapping"):
        apply_overrides(d, ["data.root.x=1"])
    assert apply_overrides({"data": {"generate": {"n": 1}}}, ["data.generate=null"]) == {"data": {"generate": None}}


def test_load_recipe_with_overrides_names_the_file(tiny_recipe, tmp_path, tiny_cityscapes):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_cityscapes)))
    r, text = load_recipe(path, ["stages.0.epochs=3"])
    assert r.stages[0].epochs == 3 and text == path.read_text()
    with pytest.raises(RecipeError, match=r"r\.yaml: unknown key 'stages\[0\]\.epochz'"):
        load_recipe(path, ["stages.0.epochz=3"])
    with pytest.raises(RecipeError, match=r"r\.yaml: override 'stages\.5\.epochs=3'"):
        load_recipe(path, ["stages.5.epochs=3"])


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, r"^missing key 'parts' \(required under the top level\)$"),
        ({"parts": [{}, {"sise": [2]}]}, r"^unknown key 'parts\[1\]\.sise'; valid keys under parts\[1\]: size, rate, kind$"),
        ({"parts": [{"size": [1, 0]}]}, r"^parts\[0\]\.size\[1\]: must be >= 1, got 0$"),
        ({"parts": [{"rate": "fast"}]}, r"^parts\[0\]\.rate: expected a number, got 'fast'$"),
        ({"parts": [{"kind": "c"}]}, r"^parts\[0\]\.kind: unknown kind 'c'; valid: a, b$"),
        ({"parts": [], "flag": 1}, r"^flag: expected true or false, got 1$"),
        ({"parts": {}}, r"^parts: expected a list, got \{\}$"),
        # a union: the member that took the type reports its bound; else every member's type is named
        ({"parts": [], "limit": 0}, r"^limit: must be > 0, got 0$"),
        ({"parts": [], "limit": "x"}, r"^limit: expected an integer or a number, got 'x'$"),
        ({"parts": [], "path": 3}, r"^path: expected true or false or a string, got 3$"),
        # a check across fields blames the one it names
        ({"parts": [], "low": 2}, r"^low: must be <= high \(1.0\), got 2.0$"),
    ],
)
def test_errors_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        validate(_Settings, data)


def test_validate_names_the_source_and_converts_yaml11_numbers():
    s = validate(_Settings, {"parts": ({"rate": "1e-3", "size": (2, 3)},), "low": 1, "limit": 2})
    assert s.parts[0].rate == 1e-3 and isinstance(s.low, float) and s.limit == 2 and s.parts[0].size == [2, 3]
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: missing key 'parts'"):
        validate(_Settings, {}, source="cfg.yaml")
    assert key_path(("stages", 0, "size", 1)) == "stages[0].size[1]" and key_path(()) == ""


def test_load_config_reads_overrides_and_refuses_bad_files(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("# comment\nparts:\n  - {rate: 2e-2}\n")  # YAML 1.1 reads 2e-2 as a string
    settings, text = load_config(_Settings, path, ["parts.0.size=[3, 4]", "flag=true"])
    assert settings.parts[0].size == [3, 4] and settings.parts[0].rate == 0.02 and settings.flag is True
    assert text == path.read_text()
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: expected a mapping of keys \(parts:, flag:.*got list"):
        load_config(_Settings, path)
    path.write_text("parts: [\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: not valid YAML"):
        load_config(_Settings, path)
