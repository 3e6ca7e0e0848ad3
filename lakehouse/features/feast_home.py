"""The platform's default state folder for Feast's own CLI, as every ``lakehouse`` command has it.

``feature_repo/feature_store.yaml`` puts the registry, the online store and Spark's warehouse
under ``${LAKEHOUSE_HOME}``. Feast expands environment variables in the file's text before it
reads anything else (``os.path.expandvars``, which leaves an unset variable as it is), and only
then imports the store classes the file names: with ``LAKEHOUSE_HOME`` unset, ``feast apply``
would look for a folder literally called ``${LAKEHOUSE_HOME}`` inside the repository.

Feast imports :mod:`lakehouse.features.online` (the online store the file names) while it checks
the configuration, so importing this package runs :func:`fill_feast_home`: when Feast is reading
a configuration at that moment and ``LAKEHOUSE_HOME`` is unset, it sets the variable to the
platform's default home (:func:`lakehouse.platform.settings.load_settings`: the profile's
``home`` or ``~/.lakehouse``) and puts that folder in place of the variable in the configuration
being read. Either way it creates the ``feast`` folder under the home, which Feast's file
registry expects to exist. Outside Feast's reading of a configuration it does nothing.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from lakehouse.platform.settings import HOME_ENV, load_settings

#: The module whose validators hold the configuration Feast is reading.
FEAST_CONFIG_MODULE = "feast.repo_config"
_UNEXPANDED = re.compile(r"\$\{" + HOME_ENV + r"\}|\$" + HOME_ENV + r"\b")


def _config_being_read() -> dict[str, Any] | None:
    """The configuration (a dict) one of Feast's validators is checking up the call stack."""
    frame = sys._getframe(1)
    while frame is not None:
        values = frame.f_locals.get("values")
        if frame.f_globals.get("__name__") == FEAST_CONFIG_MODULE and isinstance(values, dict):
            return values
        frame = frame.f_back  # type: ignore[assignment]
    return None


def expand_home(value: Any, home: str) -> Any:
    """``value`` with every unexpanded ``${LAKEHOUSE_HOME}`` replaced by ``home``; dicts and
    lists are changed in place (Feast keeps the ones it has read)."""
    if isinstance(value, str):
        return _UNEXPANDED.sub(lambda _: home, value)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = expand_home(item, home)
    elif isinstance(value, list):
        value[:] = [expand_home(item, home) for item in value]
    return value


def fill_feast_home() -> None:
    """Give the configuration Feast is reading the platform's home (see the module docstring)."""
    config = _config_being_read()
    if config is None:
        return
    home = os.environ.get(HOME_ENV)
    if not home:
        home = str(load_settings().home)
        os.environ[HOME_ENV] = home
        expand_home(config, home)
    if "://" not in home:
        (Path(home) / "feast").mkdir(parents=True, exist_ok=True)
