"""Lifecycle rules shared by the demo, the jobs and the notebooks.

Each rule answers one question the lifecycle asks before doing work again: is there a world to
generate, did the champion already learn from these exact table versions, is the outcomes table
behind its inputs. Answering them here keeps every entry point idempotent in the same way.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from lakehouse.models.registry import champion_version
from lakehouse.models.tracking import mlflow_client
from lakehouse.models.training import run_inputs
from lakehouse.platform.catalog import (
    GOLD_LABELS,
    GOLD_PREDICTION_OUTCOMES,
    GOLD_PREDICTIONS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import latest_commit
from lakehouse.scoring.predictions import prediction_outcomes
from lakehouse.simulation.generator import GenerationReport, GeneratorConfig, generate

#: Landing files the generator writes (``<entity>_<YYYY-MM-DD>.<ext>``).
_DROP_PATTERN = "*_????-??-??.*"


def landed_drops(settings: Settings) -> int:
    """How many daily drops ``landing/`` holds already."""
    return sum(1 for _ in settings.landing_dir.rglob(_DROP_PATTERN))


def demo_world(customers: int, days: int, seed: int, today: date | None = None) -> GeneratorConfig:
    """The demo's world: ``days`` ending in the past week, starting on a Monday.

    Ending near today keeps the online store current; starting on a Monday lines the
    generator's weekly rhythm up the same way whatever the date, so the demo builds the same
    world (and model) every day, only dated differently.
    """
    start = (today or date.today()) - timedelta(days=days)
    start -= timedelta(days=start.weekday())
    return GeneratorConfig(seed=seed, customers=customers, days=days, start_date=start)


def generate_once(settings: Settings, config: GeneratorConfig) -> GenerationReport | None:
    """Write the world of ``config`` into ``landing/`` unless it holds drops already (``None``)."""
    if landed_drops(settings):
        return None
    return generate(settings.landing_dir, config)


def champion_inputs(settings: Settings) -> dict[str, int] | None:
    """The Delta table versions the champion was trained on; ``None`` without a champion.

    Also ``None`` when the champion's run was not logged by the platform's training (a model
    registered by hand records no table versions).
    """
    version = champion_version(settings)
    if version is None:
        return None
    client = mlflow_client(settings)
    run_id = client.get_model_version(settings.model_name, str(version)).run_id
    if not run_id:
        return None
    try:
        versions: dict[str, int] = run_inputs(run_id, settings)["table_versions"]
    except ValueError:
        return None
    return versions


def champion_saw(settings: Settings, table_versions: dict[str, int]) -> bool:
    """Whether the champion was trained on exactly these table versions.

    Training again on them would fit the same model on the same rows, so the lifecycle skips it.
    """
    return champion_inputs(settings) == {str(k): int(v) for k, v in table_versions.items()}


def outcomes_stale(spark: SparkSession, catalog: TableCatalog) -> bool:
    """Whether predictions or labels were committed after ``gold.prediction_outcomes`` was built."""
    if not catalog.exists(spark, GOLD_PREDICTION_OUTCOMES):
        return True

    def committed(name: str) -> Any:
        return latest_commit(spark, catalog, name)[1].get("timestamp")

    built = committed(GOLD_PREDICTION_OUTCOMES)
    return bool(committed(GOLD_PREDICTIONS) > built or committed(GOLD_LABELS) > built)


def refresh_outcomes(spark: SparkSession, catalog: TableCatalog) -> DataFrame:
    """``gold.prediction_outcomes``, rebuilt only when its inputs moved since the last build.

    Left alone, the table keeps its Delta version, so a re-run of the lifecycle changes nothing.
    """
    if outcomes_stale(spark, catalog):
        return prediction_outcomes(spark, catalog)
    return catalog.read(spark, GOLD_PREDICTION_OUTCOMES)
