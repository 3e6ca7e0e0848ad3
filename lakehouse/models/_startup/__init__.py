"""The folder ``lakehouse env`` puts on ``PYTHONPATH``: only its ``sitecustomize`` matters there.

See :mod:`lakehouse.models.serialization`.
"""
