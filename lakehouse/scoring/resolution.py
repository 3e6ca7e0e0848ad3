"""Which registered model version scores: a ``models:/`` URI resolved to a concrete version.

Predictions record the version that made them, so an alias (``@champion``) is always resolved
to a version number first; the version's signature gives the inputs to hand the model and
whether it returns two class probabilities or one column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.models import get_model_info
from mlflow.models.signature import ModelSignature

from lakehouse.models.registry import model_uri as registry_model_uri
from lakehouse.models.tracking import mlflow_client
from lakehouse.platform.settings import Settings

# MLflow signature column types -> Spark SQL types.
_SPARK_TYPES: dict[str, str] = {
    "double": "double",
    "float": "float",
    "long": "bigint",
    "integer": "int",
    "string": "string",
    "boolean": "boolean",
    "datetime": "timestamp",
}


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version, resolved from a URI or alias at a point in time.

    Attributes:
        name: registered model name.
        version: the concrete version.
        run_id: the MLflow run that logged it.
        uri: ``models:/<name>/<version>``, which never moves.
        input_columns: ``(column, Spark SQL type)`` pairs of the model signature, in order.
        proba_pair: the pyfunc output is ``(n, 2)`` class probabilities (else one column).
    """

    name: str
    version: int
    run_id: str
    uri: str
    input_columns: tuple[tuple[str, str], ...]
    proba_pair: bool = True


def parse_model_uri(uri: str) -> tuple[str, str | None, int | None]:
    """``models:/name@alias`` -> ``(name, alias, None)``; ``models:/name/3`` -> ``(name, None, 3)``.

    Predictions name a registered version, so only registry URIs are accepted.
    """
    prefix = "models:/"
    rest = uri[len(prefix) :] if uri.startswith(prefix) else ""
    if "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, None, int(version)
    raise ValueError(
        f"model URI must be models:/<name>@<alias> or models:/<name>/<version>, got {uri!r}"
    )


class ModelResolver:
    """Resolves one model URI to a concrete registered version, as often as asked.

    Each :meth:`resolve` asks the registry once (the alias, or the version, is looked up again,
    so an alias moved since the previous call is honoured); what never changes for a version
    (its run, signature and output shape) is read the first time the version is seen and kept.
    """

    def __init__(self, settings: Settings, model_uri: str | None = None) -> None:
        self.settings = settings
        self.uri = model_uri or registry_model_uri(settings)
        self.name, self.alias, self.version = parse_model_uri(self.uri)
        self._versions: dict[int, ResolvedModel] = {}

    def resolve(self) -> ResolvedModel:
        """The version the URI names now.

        Raises:
            LookupError: the alias is not set or the version does not exist.
            ValueError: the model has no input signature, or one that cannot be scored.
        """
        client = mlflow_client(self.settings)
        try:
            if self.alias is not None:
                mv = client.get_model_version_by_alias(self.name, self.alias)
            else:
                mv = client.get_model_version(self.name, str(self.version))
        except MlflowException as exc:
            what = f"alias {self.alias!r}" if self.alias is not None else f"version {self.version}"
            raise LookupError(
                f"registered model {self.name!r} has no {what}: train and promote a model first "
                f"({str(exc).splitlines()[0]})"
            ) from exc
        version = int(mv.version)
        if version not in self._versions:
            self._versions[version] = _describe_version(self.name, version, str(mv.run_id))
        return self._versions[version]


def resolve_model(settings: Settings, model_uri: str | None = None) -> ResolvedModel:
    """Resolve ``model_uri`` (default: the champion) to a concrete registered version.

    Raises:
        LookupError: the alias is not set or the version does not exist.
        ValueError: the URI is not a registry URI, or the model has no input signature.
    """
    return ModelResolver(settings, model_uri).resolve()


def _describe_version(name: str, version: int, run_id: str) -> ResolvedModel:
    """Read the signature of a registered version into a :class:`ResolvedModel`."""
    concrete = f"models:/{name}/{version}"
    signature = get_model_info(concrete).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise ValueError(f"{concrete} has no input signature with column names: cannot score it")
    columns: list[tuple[str, str]] = []
    for spec in signature.inputs.inputs:
        type_name = getattr(spec.type, "name", str(spec.type))
        if type_name not in _SPARK_TYPES:
            raise ValueError(f"{concrete}: input {spec.name!r} has unsupported type {type_name}")
        columns.append((str(spec.name), _SPARK_TYPES[type_name]))
    return ResolvedModel(
        name=name,
        version=version,
        run_id=run_id,
        uri=concrete,
        input_columns=tuple(columns),
        proba_pair=_is_proba_pair(signature),
    )


def _is_proba_pair(signature: ModelSignature) -> bool:
    """Whether the signature's output is two class probabilities per row (the default)."""
    outputs: Any = signature.outputs
    if outputs is None:
        return True
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        shape = tuple(specs[0].shape)
        return len(shape) == 2 and shape[-1] == 2
    if len(specs) == 1:
        return False
    raise ValueError(f"model output {outputs} is neither (n, 2) probabilities nor one column")
