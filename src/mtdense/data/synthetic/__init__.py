"""A synthetic stereo street city written in the Cityscapes layout, with exact ground truth.

Each frame is one random 3-D street (road with lane markings, raised sidewalks, terrain,
building rows with windows, walls, fences, hedges and trees, street lights, signs, traffic
lights, parked and moving cars, pedestrians, a closed far end at 60-200 m) rendered in
perspective by a left and a right camera of a rectified rig with the Cityscapes calibration
scaled to the image size. The steps, one module each:

- :mod:`.camera`: the rig (:class:`StereoCamera`) and the left camera's pose (:class:`CameraPose`);
- :mod:`.scene`: what a scene is (:class:`Quad` rectangles, :class:`Scene`) and its label ids;
- :mod:`.sampling`: one random scene per frame (:func:`frame_rng`, :func:`sample_scene`), built
  by :mod:`.street` (layout, ground, lots, far end, furniture) and :mod:`.traffic` (cars, people);
- :mod:`.textures` and :mod:`.materials`: how each rectangle looks (band-limited procedural
  textures, materials, shape masks);
- :mod:`.render`: both views of a frame (:func:`render_view`, :func:`render_frame`);
- :mod:`.writer`: the Cityscapes files, the whole city (:func:`generate_city`), its settings
  (:func:`city_settings`, :func:`is_generated_city`) and a preview (:func:`save_preview`).

Example::

    from mtdense.data.synthetic import generate_city, save_preview
    city = generate_city("data/synth", n_train=500, n_val=100, size=(256, 512), seed=0)
    print(city.frames, city.class_frequencies())
    save_preview(city.root, "data/synth/preview.png", n=4)
"""

from mtdense.data.synthetic.camera import CITYSCAPES_BASELINE, CITYSCAPES_INTRINSICS, CameraPose, StereoCamera
from mtdense.data.synthetic.render import Frame, View, render_frame, render_view
from mtdense.data.synthetic.sampling import frame_rng, sample_scene
from mtdense.data.synthetic.scene import (
    BUILDING,
    CAR,
    FENCE,
    LIGHT,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    TERRAIN,
    VEGETATION,
    WALL,
    Quad,
    Scene,
)
from mtdense.data.synthetic.writer import (
    CITIES,
    SyntheticCity,
    city_settings,
    frame_name,
    generate_city,
    is_generated_city,
    save_preview,
    write_frame,
)

__all__ = [
    "CITYSCAPES_BASELINE", "CITYSCAPES_INTRINSICS", "CITIES", "StereoCamera", "CameraPose", "Quad", "Scene",
    "View", "Frame", "SyntheticCity", "frame_rng", "frame_name", "sample_scene", "render_view", "render_frame",
    "write_frame", "generate_city", "save_preview", "city_settings", "is_generated_city",
    "ROAD", "SIDEWALK", "BUILDING", "WALL", "FENCE", "POLE", "LIGHT", "SIGN", "VEGETATION", "TERRAIN", "SKY",
    "PERSON", "CAR",
]
