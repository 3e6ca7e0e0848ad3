"""Lakehouse: a local emulator of a Databricks-style ML lakehouse."""

from lakehouse.settings import Settings, load_settings

__all__ = ["Settings", "__version__", "load_settings"]
__version__ = "0.1.0"
