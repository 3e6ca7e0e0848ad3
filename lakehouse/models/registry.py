"""The model registry: aliases and stages in step, promotion, rollback and history.

Aliases are the source of truth and the legacy stages are kept in step with them, so
``models:/<name>@champion`` and ``models:/<name>/Production`` always load the same version:

==============  ===============  =========================================================
alias           stage            meaning
==============  ===============  =========================================================
``champion``    ``Production``   the model that scores; one version at a time
``challenger``  ``Staging``      passed the gate, waiting for promotion
(none)          ``Archived``     a former champion or challenger
==============  ===============  =========================================================

Every champion is appended to the registered model's tag ``lakehouse.champion_history``
(a JSON list of versions), which :func:`rollback` walks back. The gate that decides which
versions get there is :mod:`lakehouse.models.gate`.

Training registers a version, then gates it. A tracking server lost in between for longer than
MLflow's retries last leaves the version READY and loadable but unjudged: no verdict, no alias,
no stage, so nothing scores with it. :meth:`ModelRegistry.interrupted` tells such a version, and
:func:`promote` refuses it without ``force``, so it never reaches an alias by hand unjudged.

Importing this module imports neither MLflow nor pyspark (MLflow imports pyspark), so that
serving and the CLI can name models without a JVM's worth of imports: MLflow is imported
where a function first needs it.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lakehouse.models.tracking import mlflow_client
from lakehouse.platform.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PRODUCTION = "Production"
STAGING = "Staging"
ARCHIVED = "Archived"
HISTORY_TAG = "lakehouse.champion_history"
#: Prefix of the model version tags that record the gate's decision.
GATE_TAG_PREFIX = "lakehouse.gate."
#: The gate's verdicts, as its tags record them.
PROMOTED = "promoted"
CHALLENGER_VERDICT = "challenger"
REJECTED = "rejected"
#: Run tag of the platform's training runs (:mod:`lakehouse.models.training`), whose versions
#: are registered to be gated.
TRAINING_RUN_TAG = "lakehouse.feature_service"


@dataclass(frozen=True)
class VersionRecord:
    """One model version as ``lakehouse model history`` shows it."""

    version: int
    run_id: str
    aliases: tuple[str, ...]
    stage: str
    metric_value: float | None
    verdict: str
    reason: str
    created_at: datetime


def model_uri(settings: Settings, alias: str = CHAMPION) -> str:
    """``models:/<name>@<alias>``."""
    return f"models:/{settings.model_name}@{alias}"


def _now() -> datetime:
    return datetime.now(UTC)


class ModelRegistry:
    """The registered model of one settings, through one MLflow client."""

    def __init__(self, client: MlflowClient, name: str) -> None:
        self.client = client
        self.name = name

    @classmethod
    def of(cls, settings: Settings) -> ModelRegistry:
        """The registry of ``settings.model_name`` on the settings' stores."""
        return cls(mlflow_client(settings), settings.model_name)

    def aliases(self) -> dict[str, int]:
        """Alias -> version; empty when the model is not registered."""
        from mlflow.exceptions import MlflowException  # on first use: MLflow imports pyspark

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException:
            return {}
        return {alias: int(v) for alias, v in (model.aliases or {}).items()}

    def require_version(self, version: int) -> ModelVersion:
        """The model version ``version``; ``ValueError`` when there is none."""
        from mlflow.exceptions import MlflowException  # on first use: MLflow imports pyspark

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            raise ValueError(f"model {self.name!r} has no version {version}") from exc

    def load(self, version: int) -> Any:
        """The scikit-learn pipeline of one registered version (with ``predict_proba``).

        Loads through MLflow's registry URI, which :func:`mlflow_client` pointed here.
        """
        import mlflow.sklearn  # on first use: MLflow imports pyspark

        return mlflow.sklearn.load_model(f"models:/{self.name}/{version}")

    def interrupted(self, version: int) -> bool:
        """Whether ``version`` was registered by a training run that stopped before its gate.

        Such a version has no gate verdict although its run is one of the platform's training
        runs; a version registered by hand (a run without :data:`TRAINING_RUN_TAG`) is not one.
        """
        from mlflow.exceptions import MlflowException  # on first use: MLflow imports pyspark

        mv = self.require_version(version)
        if f"{GATE_TAG_PREFIX}verdict" in (mv.tags or {}) or not mv.run_id:
            return False
        try:
            run = self.client.get_run(mv.run_id)
        except MlflowException:
            return False
        return TRAINING_RUN_TAG in run.data.tags

    def tag_version(self, version: int, tags: dict[str, str]) -> None:
        """Set ``tags`` on one version."""
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

    def _transition(self, version: int, stage: str) -> None:
        """Legacy stage transition (deprecated in MLflow, kept in step with the aliases)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client.transition_model_version_stage(
                self.name, str(version), stage, archive_existing_versions=stage != ARCHIVED
            )

    def champion_history(self) -> list[int]:
        """Every version that was champion, in order (rollback walks it back)."""
        tags = self.client.get_registered_model(self.name).tags or {}
        return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]

    def _set_champion(self, version: int) -> int | None:
        """Move ``champion`` (and Production) to ``version``; archive the former champion."""
        aliases = self.aliases()
        previous = aliases.get(CHAMPION)
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        self._transition(version, PRODUCTION)
        if aliases.get(CHALLENGER) == version:
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        if previous is not None and previous != version:
            # archive_existing_versions already archived it when it was in Production.
            current = self.client.get_model_version(self.name, str(previous)).current_stage
            if current != ARCHIVED:
                self._transition(previous, ARCHIVED)
        return previous

    def set_challenger(self, version: int) -> None:
        """Give ``version`` the ``challenger`` alias and the Staging stage."""
        self.require_version(version)
        self.client.set_registered_model_alias(self.name, CHALLENGER, str(version))
        self._transition(version, STAGING)

    def promote(self, version: int, force: bool = False) -> int | None:
        """Make ``version`` the champion; see :func:`promote`."""
        tags = self.require_version(version).tags or {}
        if tags.get(f"{GATE_TAG_PREFIX}verdict") == REJECTED and not force:
            raise ValueError(
                f"version {version} of {self.name} was rejected by the gate "
                f"({tags.get(f'{GATE_TAG_PREFIX}reason', 'no reason recorded')}); "
                "use force to promote it anyway"
            )
        if self.aliases().get(CHAMPION) == version:
            log.info("version %s of %s is already the champion", version, self.name)
            return version
        previous = self._set_champion(version)
        history = [*self.champion_history(), version]
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))
        self.tag_version(version, {"lakehouse.promoted_at": str(_now())})
        log.info("promoted %s version %s to champion (was %s)", self.name, version, previous)
        return previous

    def rollback(self) -> int:
        """Restore the previous champion; see :func:`rollback`."""
        current = self.aliases().get(CHAMPION)
        if current is None:
            raise ValueError(f"model {self.name!r} has no champion to roll back")
        history = self.champion_history()
        while history and history[-1] == current:
            history.pop()
        if not history:
            raise ValueError(f"model {self.name!r} has no previous champion to roll back to")
        target = history[-1]
        self._set_champion(target)
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))
        self.tag_version(current, {"lakehouse.rolled_back_at": str(_now())})
        log.info("rolled %s back from version %s to version %s", self.name, current, target)
        return target

    def history(self) -> list[VersionRecord]:
        """Every version, newest first; see :func:`history`."""
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        records = []
        for mv in self.client.search_model_versions(f"name = '{self.name}'"):
            tags = mv.tags or {}
            tagged = tags.get(f"{GATE_TAG_PREFIX}candidate_value")
            value = float(tagged) if tagged is not None else None
            if value is None and mv.run_id:
                value = self.client.get_run(mv.run_id).data.metrics.get("roc_auc")
            records.append(
                VersionRecord(
                    version=int(mv.version),
                    run_id=mv.run_id or "",
                    aliases=tuple(sorted(by_version.get(int(mv.version), []))),
                    stage=mv.current_stage or "None",
                    metric_value=float(value) if value is not None else None,
                    verdict=tags.get(f"{GATE_TAG_PREFIX}verdict", ""),
                    reason=tags.get(f"{GATE_TAG_PREFIX}reason", ""),
                    created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
                )
            )
        return sorted(records, key=lambda r: -r.version)


# --- The module's functions: one registry per call ---------------------------------------------
def alias_version(settings: Settings, alias: str) -> int | None:
    """The version holding ``alias``, or ``None`` (also when the model is not registered)."""
    return ModelRegistry.of(settings).aliases().get(alias)


def champion_version(settings: Settings) -> int | None:
    """The current champion's version, or ``None``."""
    return alias_version(settings, CHAMPION)


def load_version(settings: Settings, version: int) -> Any:
    """The scikit-learn pipeline of one registered version (with ``predict_proba``)."""
    return ModelRegistry.of(settings).load(version)


def set_challenger(settings: Settings, version: int) -> None:
    """Give ``version`` the ``challenger`` alias and the Staging stage."""
    ModelRegistry.of(settings).set_challenger(version)


def promote(settings: Settings, version: int, force: bool = False) -> int | None:
    """Make ``version`` the champion (alias ``champion``, stage Production).

    The former champion is archived and the new one appended to the champion history.
    A version the gate rejected, or never judged because its training stopped after
    registering it, is refused unless ``force``. Returns the former champion.
    """
    return ModelRegistry.of(settings).promote(version, force=force)


def rollback(settings: Settings) -> int:
    """Restore the previous champion; the current one is archived. Returns the restored version."""
    return ModelRegistry.of(settings).rollback()


def history(settings: Settings) -> list[VersionRecord]:
    """Every version of the model, newest first, with aliases, stage, metric and verdict."""
    return ModelRegistry.of(settings).history()
