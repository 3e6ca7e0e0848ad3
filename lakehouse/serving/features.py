"""Online feature lookups of the serving process: the feature service's values per customer.

SQLite online stores (the platform's default) are read through
:class:`lakehouse.features.online.OnlineFeatureReader`, one prepared indexed query per customer;
Redis through Feast's ``FeatureStore.get_online_features``, one call per batch of customers.
Each thread gets its own reader (a SQLite connection belongs to the thread that opened it).

The Redis client of the serving process fails fast (:data:`REDIS_SERVING_OPTIONS`): while Redis
is down a lookup fails at once and its requests get 503, instead of each waiting seconds
through the client's default retries with backoff. Options named in ``LAKEHOUSE_REDIS_URL``
(``host:port,option=value,...``) win.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from lakehouse.platform.settings import Settings

#: Options added to the Redis connection string (Feast passes them to ``redis.Redis``): no
#: retry (a dropped connection is reopened anyway), one second to connect, two to answer.
REDIS_SERVING_OPTIONS: dict[str, str] = {
    "retry": "null",
    "socket_connect_timeout": "1",
    "socket_timeout": "2",
}


def serving_redis_url(url: str) -> str:
    """``url`` (Feast's ``host:port[,option=value...]``) with :data:`REDIS_SERVING_OPTIONS`
    it does not set itself."""
    given = {part.split("=", 1)[0].strip() for part in url.split(",") if "=" in part}
    extra = [f"{k}={v}" for k, v in REDIS_SERVING_OPTIONS.items() if k not in given]
    return ",".join([url, *extra])


class FeatureUnavailable(RuntimeError):
    """The online store or the feature service cannot be read."""


class FeatureLookup:
    """Reads one feature service's online values, from any thread."""

    def __init__(self, settings: Settings, service: str) -> None:
        """Open the settings' online store for ``service``; :class:`FeatureUnavailable` if the
        feature registry is missing or does not hold the service."""
        registry = settings.feast_dir / "registry.db"
        if not registry.is_file():
            raise FeatureUnavailable(
                f"no feature registry at {registry}: run `lakehouse features apply` and "
                "`lakehouse features materialize`, or send every model input"
            )
        if settings.online_store == "redis":
            settings = replace(settings, redis_url=serving_redis_url(settings.redis_url))
        self.settings = settings
        self.service = service
        self._local = threading.local()
        store = self._store()
        try:
            fs = store.get_feature_service(service)
        except Exception as exc:
            raise FeatureUnavailable(f"feature service {service!r} is not registered") from exc
        self.feature_columns: list[str] = [
            f.name for projection in fs.feature_view_projections for f in projection.features
        ]

    def _store(self) -> Any:
        store = getattr(self._local, "store", None)
        if store is None:
            from lakehouse.features.online import online_feature_store

            store = online_feature_store(self.settings)
            self._local.store = store
        return store

    def _reader(self) -> Any:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            from lakehouse.features.online import OnlineFeatureReader

            reader = OnlineFeatureReader(self._store(), self.service)
            self._local.reader = reader
        return reader

    def get(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """customer id -> feature column -> value (None where the store holds nothing)."""
        if self.settings.sqlite_online_store:
            reader = self._reader()
            return {c: reader.get(c) for c in dict.fromkeys(customer_ids)}
        store = self._store()
        distinct = list(dict.fromkeys(customer_ids))
        response = store.get_online_features(
            features=store.get_feature_service(self.service),
            entity_rows=[{"customer_id": c} for c in distinct],
        ).to_dict()
        return {
            c: {
                name: response.get(name, [None] * len(distinct))[k] for name in self.feature_columns
            }
            for k, c in enumerate(distinct)
        }
