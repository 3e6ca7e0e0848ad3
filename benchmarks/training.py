"""Training benchmark: retrieval, fit and the cost of tracking, per model family.

    .venv/bin/python benchmarks/training.py [--customers 2000] [--days 120] [--repeats 2]

In a temporary home it generates a world, runs the pipeline (bronze, silver, gold) and applies
the Feast repository, then for the default random forest and for gradient boosting
(``hist_gradient_boosting``), with :class:`lakehouse.models.training.TrainConfig`'s defaults:

* retrieval: :func:`lakehouse.features.store.build_training_set` (Feast's point-in-time join down to
  the pandas frame), median of ``--repeats`` runs after a warm-up;
* fit: the scikit-learn pipeline of :func:`lakehouse.models.training.build_pipeline` fitted on the
  training part of that frame, prepared as :func:`lakehouse.models.training.train` prepares it;
* tracked: :func:`lakehouse.models.training.train` on the same training set (fit, evaluation,
  importance, plots, MLflow run and model logging, registration, the gate and its audit row).

It prints the split (retrieval, fit) and the tracked total (retrieval + ``train()``) against
retrieval + fit: the overhead of tracking, registration and the gate, as a ratio. These ratios
are information, with no target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import build_world, muted, quiet, timed
from pyspark.sql import SparkSession

from lakehouse.features import store as features
from lakehouse.models.tracking import connect
from lakehouse.models.training import (
    MODEL_TYPES,
    TrainConfig,
    build_pipeline,
    labels,
    model_columns,
    prepare_inputs,
    split_columns,
    time_split,
    train,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark


def fit_only(training_set: features.TrainingSet, config: TrainConfig) -> float:
    """Seconds to fit the model of ``config`` on the training part, as ``train()`` does."""
    frame = training_set.frame
    numeric, categorical = split_columns(frame, model_columns(training_set))
    train_frame, _ = time_split(frame, config.holdout_fraction)
    X = prepare_inputs(train_frame, numeric, categorical)
    y = labels(train_frame)
    model = build_pipeline(config, numeric, categorical)
    return timed(lambda: model.fit(X, y))[1]


def tracked_seconds(
    training_set: features.TrainingSet,
    config: TrainConfig,
    settings: Settings,
    spark: SparkSession,
    run_name: str,
) -> float:
    """Seconds of one tracked ``train()``: registered, gated, audit row written."""
    catalog = TableCatalog(settings.tables_root)
    with muted():
        _, seconds = timed(
            lambda: train(
                training_set, config, settings, spark=spark, catalog=catalog, run_name=run_name
            )
        )
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Build the world, time retrieval, fit and tracked training; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (median)")
    args = parser.parse_args(argv)
    quiet()

    home = Path(tempfile.mkdtemp(prefix="bench-training-"))
    started = time.perf_counter()
    spark = get_spark(
        load_settings().with_home(home), app_name="bench-training", register_tables=False
    )
    results: dict[str, dict[str, float]] = {}
    try:
        settings = build_world(
            spark, home, args.customers, args.days, materialize=False, min_labels=50
        )
        catalog = TableCatalog(settings.tables_root)

        def retrieve() -> features.TrainingSet:
            return features.build_training_set(spark, settings, catalog)

        training_set = retrieve()  # warm-up
        retrieval_s = statistics.median(timed(retrieve)[1] for _ in range(args.repeats))
        frame = training_set.frame
        print(
            f"training set: {len(frame)} rows x {len(model_columns(training_set))} model "
            f"columns; retrieval {retrieval_s:.2f}s (median of {args.repeats})"
        )
        with muted():
            connect(settings)  # creates the tracking store: not part of any figure
            # Warm-up of the tracked path (imports, first model logged), not timed.
            train(
                training_set,
                TrainConfig(n_estimators=5),
                settings,
                spark=spark,
                catalog=catalog,
                run_name="warm-up",
            )
        for model_type in MODEL_TYPES:
            config = TrainConfig(model_type=model_type)
            fit_s = statistics.median(fit_only(training_set, config) for _ in range(args.repeats))
            tracked = [
                tracked_seconds(training_set, config, settings, spark, f"bench-{model_type}-{i}")
                for i in range(args.repeats)
            ]
            train_s = statistics.median(tracked)
            print(
                f"{model_type}: fit {fit_s:.2f}s, train() {train_s:.2f}s "
                f"(medians of {args.repeats})"
            )
            results[model_type] = {"fit": fit_s, "train": train_s}
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)

    lines = ["", "Figures (information, no targets)"]
    for model_type, r in results.items():
        untracked = retrieval_s + r["fit"]
        total = retrieval_s + r["train"]
        lines += [
            f"{model_type}",
            f"  {'retrieval (build_training_set, s)':<50} {retrieval_s:>9.2f}",
            f"  {'fit (sklearn pipeline, s)':<50} {r['fit']:>9.2f}",
            f"  {'retrieval share of retrieval + fit':<50} {retrieval_s / untracked:>9.2f}",
            f"  {'tracked total: retrieval + train() (s)':<50} {total:>9.2f}",
            f"  {'tracked total vs retrieval + fit (x)':<50} {total / untracked:>9.2f}",
            f"  {'train() vs fit alone (x)':<50} {r['train'] / r['fit']:>9.2f}",
        ]
    lines.append(f"(benchmark took {time.perf_counter() - started:.0f}s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
