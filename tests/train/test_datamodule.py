"""The datamodule: the recipe's data settings reach the loaders."""

from torchvision.transforms import v2

from mtdense.train.datamodule import CityscapesDataModule
from mtdense.train.schema import DataConfig, StageConfig


def test_recipe_colour_jitter_reaches_the_training_transform(tiny_cityscapes):
    def jitters(color_jitter):
        dm = CityscapesDataModule(tiny_cityscapes, batch_size=2, train_size=(32, 64), color_jitter=color_jitter)
        return [t for t in dm.train_dataset().transform.pipeline.transforms if isinstance(t, v2.ColorJitter)]

    (no_hue,) = jitters((0.3, 0.2, 0.1, 0.0))
    assert no_hue.hue is None and no_hue.brightness == (0.7, 1.3) and no_hue.contrast == (0.8, 1.2)
    (default,) = jitters(True)
    assert default.hue == (-0.05, 0.05)
    assert jitters(False) == []


def test_from_config_takes_every_setting_from_the_recipe(tiny_cityscapes):
    data = DataConfig(root=str(tiny_cityscapes), depth_source="disparity", clean_disparity=True, crop_bottom=0.25,
                      num_workers=0, color_jitter=[0.1, 0.2, 0.3, 0.0], cache_in_memory=True)
    stage = StageConfig(name="s", epochs=1, batch_size=3, lr=1e-3, size=[32, 64], crop_scale=[0.7, 0.9], zoom_depth=True)
    dm = CityscapesDataModule.from_config(data, stage, (32, 64), (48, 96))
    assert (dm.root, dm.batch_size, dm.train_size, dm.val_size) == (tiny_cityscapes, 3, (32, 64), (48, 96))
    assert (dm.crop_scale, dm.zoom_depth, dm.num_workers, list(dm.color_jitter)) == ((0.7, 0.9), True, 0, [0.1, 0.2, 0.3, 0.0])
    assert dm.dataset_kwargs == {"depth_source": "disparity", "clean_disparity": True, "crop_bottom": 0.25,
                                 "cache_in_memory": True, "load_normals": False}
    with_normals = CityscapesDataModule.from_config(data, stage, (32, 64), None, tasks=["seg", "depth", "normals"])
    assert with_normals.dataset_kwargs["load_normals"] is True
    # Without a recipe, the recipe's defaults.
    plain = CityscapesDataModule(tiny_cityscapes, batch_size=2, train_size=(32, 64))
    defaults = DataConfig()
    assert plain.num_workers == defaults.num_workers and plain.crop_scale == (0.5, 1.0)
    assert plain.dataset_kwargs["crop_bottom"] == defaults.crop_bottom
