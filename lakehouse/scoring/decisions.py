"""The decision taken on a score: approve, review or decline, by score band.

Kept apart from the model and Spark plumbing so the bands can be read (and changed) on their
own; the only dependency is the Spark column they are applied to.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F


@dataclass(frozen=True)
class DecisionThresholds:
    """Score bands of the decision: approve below ``approve_below``, decline from ``decline_at``.

    Scores in between (and a missing score) are sent to manual review.
    """

    approve_below: float = 0.2
    decline_at: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.approve_below <= self.decline_at <= 1.0:
            raise ValueError(
                "thresholds must satisfy 0 <= approve_below <= decline_at <= 1, got "
                f"approve_below={self.approve_below}, decline_at={self.decline_at}"
            )

    def decide(self, score: Column) -> Column:
        """The decision column for a score column."""
        return (
            F.when(score < F.lit(self.approve_below), F.lit("approve"))
            .when(score >= F.lit(self.decline_at), F.lit("decline"))
            .otherwise(F.lit("review"))
        )
