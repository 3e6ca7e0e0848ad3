"""Scoring: loan applications scored by the registered model into ``gold.predictions``.

:mod:`~lakehouse.scoring.resolution` picks the model version, :mod:`~lakehouse.scoring.decisions`
turns a score into a decision, :mod:`~lakehouse.scoring.predictions` scores and writes,
:mod:`~lakehouse.scoring.batch` and :mod:`~lakehouse.scoring.stream` are the two ways in.
"""
