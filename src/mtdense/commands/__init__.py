"""Sub-commands of the ``mtdense`` CLI, one module each (see :mod:`mtdense.cli`)."""
