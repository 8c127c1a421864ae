"""The recipe API under its former module name, for code that still imports it from here.

New code imports from :mod:`mtdense.train` (or :mod:`.schema`, :mod:`.config`, :mod:`.prepare`,
:mod:`.runner`).
"""

from mtdense.train.config import apply_overrides  # noqa: F401
from mtdense.train.prepare import prepare_data  # noqa: F401
from mtdense.train.runner import *  # noqa: F403
from mtdense.train.schema import *  # noqa: F403
