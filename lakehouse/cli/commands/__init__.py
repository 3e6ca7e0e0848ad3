"""Sub-commands of the ``lakehouse`` CLI, one module each (see :mod:`lakehouse.cli`)."""
