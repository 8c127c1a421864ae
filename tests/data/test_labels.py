"""The label table against the official one (cityscapesscripts), and the mappings built from it."""

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as OFFICIAL

from mtdense.data.labels import (
    IGNORE_INDEX, LABEL_ID_COLORS, NUM_CLASSES, TRAIN_CLASS_NAMES, TRAIN_PALETTE, VALID_LABEL_IDS,
    colorize_train_ids, label_ids_to_train_ids, train_ids_to_label_ids,
)

TRAINED = sorted((lab for lab in OFFICIAL if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)


def test_train_classes_match_the_official_table():
    assert NUM_CLASSES == 19 and IGNORE_INDEX == 255
    assert TRAIN_CLASS_NAMES == [lab.name for lab in TRAINED]
    assert TRAIN_CLASS_NAMES[0] == "road" and TRAIN_CLASS_NAMES[13] == "car" and TRAIN_CLASS_NAMES[18] == "bicycle"
    np.testing.assert_array_equal(TRAIN_PALETTE, np.array([lab.color for lab in TRAINED], np.uint8))
    assert VALID_LABEL_IDS.tolist() == list(range(34))
    for lab in OFFICIAL:
        if lab.id >= 0:
            assert tuple(LABEL_ID_COLORS[lab.id]) == lab.color


def test_every_label_id_maps_as_the_official_table_says():
    ids = np.array([lab.id for lab in OFFICIAL if lab.id >= 0], np.uint8)
    expected = np.array([lab.trainId if 0 <= lab.trainId < 255 else 255 for lab in OFFICIAL if lab.id >= 0])
    got = label_ids_to_train_ids(ids)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    # no class collapses into another: 19 distinct train ids, each from exactly one label id
    trained = got[got != 255]
    assert sorted(trained.tolist()) == list(range(19))


def test_void_classes_are_ignored_not_a_20th_class():
    void = [lab.id for lab in OFFICIAL if lab.id >= 0 and lab.ignoreInEval]
    assert 0 in void and 1 in void  # unlabeled, ego vehicle
    assert (label_ids_to_train_ids(np.array(void, np.uint8)) == 255).all()


def test_round_trip_and_shape():
    train = np.array([[0, 1, 18], [255, 13, 10]], np.uint8)
    ids = train_ids_to_label_ids(train)
    np.testing.assert_array_equal(ids, [[7, 8, 33], [0, 26, 23]])
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), train)


@pytest.mark.parametrize("bad", [34, 200, 255])
def test_unknown_label_ids_raise(bad):
    with pytest.raises(ValueError, match=rf"\[{bad}\].*labelIds"):
        label_ids_to_train_ids(np.array([[7, bad]], np.uint8))


def test_bad_train_ids_and_dtypes_raise():
    with pytest.raises(ValueError, match=r"\[19\]"):
        train_ids_to_label_ids(np.array([19], np.uint8))
    with pytest.raises(ValueError, match="integer"):
        label_ids_to_train_ids(np.array([7.0]))
    with pytest.raises(ValueError, match="outside 0..255"):
        label_ids_to_train_ids(np.array([-1, 7]))


def test_colorize():
    rgb = colorize_train_ids(np.array([[0, 255], [13, 18]], np.uint8))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], (128, 64, 128))  # road
    np.testing.assert_array_equal(rgb[0, 1], (0, 0, 0))  # ignore
    np.testing.assert_array_equal(rgb[1, 0], (0, 0, 142))  # car
    np.testing.assert_array_equal(rgb[1, 1], (119, 11, 32))  # bicycle
