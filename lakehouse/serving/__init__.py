"""HTTP model serving.

The serving process answers requests without a JVM, so this package imports neither pyspark nor
the Spark session module (an import-linter contract in ``pyproject.toml`` checks it).
"""
