"""The ``city`` fixture: one small synthetic city shared by the tests of this folder."""

from __future__ import annotations

import pytest
from synth_city import SEED, SIZE

from mtdense.data import synthetic as syn


@pytest.fixture(scope="session")
def city(tmp_path_factory) -> syn.SyntheticCity:
    """3 train, 1 val and 1 test frames at 128 x 256, generated in this process."""
    return syn.generate_city(tmp_path_factory.mktemp("synth") / "city", 3, 1, n_test=1, size=SIZE, seed=SEED,
                             progress=False, workers=0)
