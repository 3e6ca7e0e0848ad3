"""The seeded credit-risk generator: contract, determinism, faults, drift and learnability.

Every count the generator reports is checked against an independent reading of the files with
``json`` and ``csv`` (no Spark needed).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lakehouse.cli import main
from lakehouse.medallion.contracts import BUSINESS_KEYS, EVENT_TIME, LANDING_FORMATS, RAW_FIELDS
from lakehouse.platform.catalog import ENTITIES
from lakehouse.platform.settings import Settings
from lakehouse.simulation.generator import (
    EntityReport,
    GenerationReport,
    GeneratorConfig,
    generate,
    landing_path,
)

FAULTY = GeneratorConfig(
    seed=11,
    customers=300,
    days=45,
    malformed_rate=0.02,
    duplicate_rate=0.02,
    key_duplicate_rate=0.02,
    late_rate=0.05,
    schema_drift_from_day=30,
)
CLEAN = FAULTY.without_faults()
NUMBER_FIELDS = {
    "customers": ("annual_income", "employment_years", "credit_score"),
    "transactions": ("amount",),
    "loan_applications": ("loan_amount", "term_months"),
    "repayments": ("days_past_due",),
}
TIMESTAMP_FIELDS = {
    "customers": ("updated_at",),
    "transactions": ("transaction_ts",),
    "loan_applications": ("applied_at",),
    "repayments": ("observed_at",),
}
FILE_NAME = re.compile(r"^(?P<entity>[a-z_]+)_(?P<day>\d{4}-\d{2}-\d{2})\.(?P<ext>json|csv)$")


# --- An independent reading of the landing folder ------------------------------------------------


@dataclass
class Line:
    """One data line of a landing file, judged without the generator's help."""

    file_day: date
    text: str
    status: str  # "ok", "unparseable" or "invalid"
    record: dict[str, Any] | None
    extra: tuple[str, ...]


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _number(value: Any, from_text: bool) -> float | None:
    if from_text:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _judge(entity: str, record: dict[str, Any], from_text: bool) -> str:
    if any(_number(record[f], from_text) is None for f in NUMBER_FIELDS[entity]):
        return "invalid"
    if any(_timestamp(record[f]) is None for f in TIMESTAMP_FIELDS[entity]):
        return "invalid"
    if entity == "repayments" and not isinstance(record["defaulted"], bool):
        return "invalid"
    return "ok"


def read_entity(landing: Path, entity: str) -> list[Line]:
    """Every data line of ``entity``'s files, in file-date then line order."""
    lines: list[Line] = []
    fields = RAW_FIELDS[entity]
    for path in sorted((landing / entity).iterdir()):
        match = FILE_NAME.match(path.name)
        assert match, f"unexpected file {path}"
        assert match["entity"] == entity and match["ext"] == LANDING_FORMATS[entity]
        day = date.fromisoformat(match["day"])
        text = path.read_text(encoding="utf-8")
        assert text == "" or text.endswith("\n")
        rows = text.splitlines()
        if LANDING_FORMATS[entity] == "csv":
            header = next(csv.reader([rows[0]]))
            assert tuple(header[: len(fields)]) == fields
            for raw in rows[1:]:
                values = next(csv.reader([raw]))
                if len(values) != len(header):
                    lines.append(Line(day, raw, "unparseable", None, ()))
                    continue
                record = dict(zip(header, values, strict=True))
                extra = tuple(header[len(fields) :])
                lines.append(Line(day, raw, _judge(entity, record, True), record, extra))
            continue
        for raw in rows:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                lines.append(Line(day, raw, "unparseable", None, ()))
                continue
            assert isinstance(record, dict) and set(fields) <= set(record), raw
            extra = tuple(k for k in record if k not in fields)
            lines.append(Line(day, raw, _judge(entity, record, False), record, extra))
    return lines


def _key(entity: str, record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(record[k] for k in BUSINESS_KEYS[entity])


def _contract(entity: str, record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record[f] for f in RAW_FIELDS[entity])


def count_independently(landing: Path, entity: str) -> EntityReport:
    """The counts of :class:`EntityReport`, recomputed from the files alone."""
    lines = read_entity(landing, entity)
    ok = [line for line in lines if line.status == "ok"]
    texts = Counter(line.text for line in ok)
    first: dict[tuple[str, ...], Line] = {}
    contents: dict[tuple[str, ...], set[tuple[Any, ...]]] = defaultdict(set)
    for line in ok:
        assert line.record is not None
        key = _key(entity, line.record)
        first.setdefault(key, line)
        contents[key].add(_contract(entity, line.record))
    late = 0
    for line in first.values():
        assert line.record is not None
        event_day = _timestamp(line.record[EVENT_TIME[entity]]).date()  # type: ignore[union-attr]
        lag = (line.file_day - event_day).days
        assert 0 <= lag <= 5, line.text
        late += lag > 0
    return EntityReport(
        entity,
        files=len(list((landing / entity).iterdir())),
        lines=len(lines),
        clean_records=len(first),
        malformed=sum(line.status == "unparseable" for line in lines),
        invalid_values=sum(line.status == "invalid" for line in lines),
        exact_duplicates=len(ok) - len(texts),
        key_duplicates=sum(len(c) - 1 for c in contents.values()),
        late=late,
        drifted_lines=sum(bool(line.extra) for line in ok),
    )


def first_versions(landing: Path, entity: str) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """Business key -> contract values of the first valid line holding it."""
    out: dict[tuple[str, ...], tuple[Any, ...]] = {}
    for line in read_entity(landing, entity):
        if line.status == "ok" and line.record is not None:
            out.setdefault(_key(entity, line.record), _contract(entity, line.record))
    return out


def tree(landing: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``landing``."""
    return {str(p.relative_to(landing)): p.read_bytes() for p in landing.rglob("*") if p.is_file()}


# --- Fixtures ------------------------------------------------------------------------------------


@dataclass
class Generated:
    landing: Path
    report: GenerationReport


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    landing = tmp_path_factory.mktemp("faulty") / "landing"
    return Generated(landing, generate(landing, FAULTY))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    landing = tmp_path_factory.mktemp("clean") / "landing"
    return Generated(landing, generate(landing, CLEAN))


@pytest.fixture(scope="module")
def default_world(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """The default configuration (2000 customers, 90 days) without faults."""
    landing = tmp_path_factory.mktemp("default") / "landing"
    return Generated(landing, generate(landing, GeneratorConfig().without_faults()))


@pytest.fixture(scope="module")
def default_frames(default_world: Generated) -> dict[str, pd.DataFrame]:
    """The default world's records as pandas frames."""
    return frames(default_world.landing)


def frames(landing: Path) -> dict[str, pd.DataFrame]:
    """Valid records of every entity as pandas frames, first version per business key."""
    out = {}
    for entity in ENTITIES:
        rows = first_versions(landing, entity)
        out[entity] = pd.DataFrame(list(rows.values()), columns=list(RAW_FIELDS[entity]))
    for entity, columns in TIMESTAMP_FIELDS.items():
        for column in columns:
            out[entity][column] = pd.to_datetime(out[entity][column], utc=True)
    out["transactions"]["amount"] = out["transactions"]["amount"].astype(float)
    return out


def _features(f: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    """Model inputs as of each labelled application, computed from the raw records alone."""
    labels = f["repayments"][["application_id", "defaulted"]]
    apps = f["loan_applications"].merge(labels, on="application_id").sort_values("applied_at")
    profiles = f["customers"].sort_values("updated_at")
    apps = pd.merge_asof(
        apps, profiles, left_on="applied_at", right_on="updated_at", by="customer_id"
    )
    txns = f["transactions"].copy()
    txns["day"] = txns["transaction_ts"].dt.floor("D")
    apps["day"] = apps["applied_at"].dt.floor("D")
    window = apps[["application_id", "customer_id", "day"]].merge(
        txns, on="customer_id", suffixes=("", "_txn")
    )
    window = window[
        (window["day_txn"] < window["day"])
        & (window["day_txn"] >= window["day"] - pd.Timedelta(days=30))
    ]
    window["gambling"] = np.where(window["merchant_category"] == "GAMBLING", window["amount"], 0)
    sums = window.groupby("application_id").agg(
        amount_30d=("amount", "sum"), gambling_30d=("gambling", "sum")
    )
    apps = apps.merge(sums, on="application_id", how="left").fillna(
        {"amount_30d": 0.0, "gambling_30d": 0.0}
    )
    apps["gambling_share_30d"] = np.where(
        apps["amount_30d"] > 0, apps["gambling_30d"] / apps["amount_30d"].clip(lower=1e-9), 0.0
    )
    birth = pd.to_datetime(apps["birth_date"]).dt.tz_localize("UTC")
    apps["age"] = (apps["applied_at"] - birth).dt.days / 365.25
    columns = [
        "credit_score",
        "annual_income",
        "employment_years",
        "loan_amount",
        "term_months",
        "age",
        "gambling_share_30d",
        "amount_30d",
    ]
    return apps[columns].astype(float), apps["defaulted"].astype(int)


# --- Contract and accounting ---------------------------------------------------------------------


def test_files_follow_the_landing_contract(faulty: Generated) -> None:
    names = sorted(p.name for p in faulty.landing.rglob("*"))
    assert not [n for n in names if n.startswith((".", "_"))], "temporary files left behind"
    expected = sorted(
        [e for e in ENTITIES]
        + [
            landing_path(faulty.landing, e, FAULTY.date_of(d)).name
            for e in ENTITIES
            for d in range(45)
        ]
    )
    assert names == expected
    assert faulty.report.days == tuple(range(45))
    assert faulty.report.total_files == 4 * 45
    assert len(faulty.report.paths) == 4 * 45
    first = (faulty.landing / "customers" / "customers_2026-01-01.json").read_text()
    record = json.loads(next(line for line in first.splitlines() if "CX" not in line))
    assert list(record) == list(RAW_FIELDS["customers"])
    assert re.fullmatch(r"C\d{6}", record["customer_id"])
    assert re.fullmatch(r"2026-01-01T0\d:\d\d:\d\dZ", record["updated_at"])
    assert record["home_ownership"] in ("RENT", "OWN", "MORTGAGE")
    assert 300 <= record["credit_score"] <= 850


@pytest.mark.parametrize("entity", ENTITIES)
def test_report_counts_every_line_exactly(faulty: Generated, entity: str) -> None:
    reported = faulty.report.entities[entity]
    assert count_independently(faulty.landing, entity) == reported
    assert reported.balanced


def test_totals_sum_the_entities(faulty: Generated) -> None:
    totals = faulty.report.totals
    assert totals.entity == "total"
    assert totals.lines == sum(r.lines for r in faulty.report.entities.values())
    assert faulty.report.total_lines == totals.lines
    assert totals.balanced
    assert faulty.report.rows()[-1][0] == "total"


@pytest.mark.parametrize("entity", ENTITIES)
def test_faults_never_change_the_clean_world(
    faulty: Generated, clean: Generated, entity: str
) -> None:
    """Each business key's first valid version is the fault-free record, late or not."""
    horizon_end = FAULTY.date_of(FAULTY.days - 5)

    def settled(versions: dict[tuple[str, ...], tuple[Any, ...]]) -> dict[Any, Any]:
        at = RAW_FIELDS[entity].index(EVENT_TIME[entity])
        return {k: v for k, v in versions.items() if _timestamp(v[at]).date() < horizon_end}  # type: ignore[union-attr]

    with_faults = settled(first_versions(faulty.landing, entity))
    without = settled(first_versions(clean.landing, entity))
    assert with_faults == without
    assert len(without) > 0


# --- Determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    config = replace(FAULTY, customers=60, days=12)
    generate(tmp_path / "a", config)
    generate(tmp_path / "b", config)
    generate(tmp_path / "c", replace(config, seed=12))
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a == b
    assert set(a) == set(c)
    assert (
        a["transactions/transactions_2026-01-05.csv"]
        != c["transactions/transactions_2026-01-05.csv"]
    )


def test_split_generation_equals_whole(faulty: Generated, tmp_path: Path) -> None:
    first = generate(tmp_path, FAULTY, days=range(0, 20))
    second = generate(tmp_path, FAULTY, days=range(20, 45))
    assert tree(tmp_path) == tree(faulty.landing)
    assert first.merged(second).entities == faulty.report.entities
    assert first.merged(second).days == faulty.report.days


def test_a_longer_horizon_only_adds_drops(faulty: Generated, tmp_path: Path) -> None:
    generate(tmp_path, replace(FAULTY, days=60), days=range(0, 45))
    assert tree(tmp_path) == tree(faulty.landing)


def test_rewriting_a_day_is_idempotent(faulty: Generated, tmp_path: Path) -> None:
    generate(tmp_path, FAULTY, days=[3, 4])
    again = generate(tmp_path, FAULTY, days=range(3, 5))
    assert len(tree(tmp_path)) == 8
    assert all(
        tree(tmp_path)[k] == v for k, v in tree(faulty.landing).items() if k in tree(tmp_path)
    )
    assert again.total_files == 8


@pytest.mark.parametrize(
    ("days", "message"),
    [(range(40, 46), r"outside the horizon 0\.\.44"), (range(0), "empty"), ([-1], "outside")],
)
def test_days_outside_the_horizon_are_refused(tmp_path: Path, days: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, FAULTY, days=days)
    assert not tmp_path.joinpath("customers").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"malformed_rate": 1.5}, "malformed_rate must be between 0.0 and 1.0"),
        ({"late_rate": -0.1}, "late_rate"),
        ({"customers": 0}, "customers must be between 1"),
        ({"days": 0}, "days must be between 1"),
        ({"seed": -1}, "seed"),
        ({"duplicate_rate": float("nan")}, "duplicate_rate"),
        ({"schema_drift_from_day": -3}, "schema_drift_from_day"),
        ({"start_date": "2026-01-01"}, "start_date must be a datetime.date"),
        ({"customers": 2.5}, "customers must be an integer"),
    ],
)
def test_bad_config_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**change)


# --- Faults and drift ----------------------------------------------------------------------------

FAULT_FIELDS = {
    "malformed_rate": ("malformed", "invalid_values"),
    "duplicate_rate": ("exact_duplicates",),
    "key_duplicate_rate": ("key_duplicates",),
    "late_rate": ("late",),
}


@pytest.mark.parametrize("rate", sorted(FAULT_FIELDS))
def test_each_fault_appears_only_when_its_rate_is_positive(tmp_path: Path, rate: str) -> None:
    base = replace(CLEAN, customers=120, days=20)
    change: dict[str, Any] = {rate: 0.05}
    on = generate(tmp_path / "on", replace(base, **change)).entities
    off = generate(tmp_path / "off", base).entities
    for name in FAULT_FIELDS[rate]:
        assert getattr(on["transactions"], name) > 0, name
        assert sum(getattr(r, name) for r in off.values()) == 0, name
    others = [n for r, names in FAULT_FIELDS.items() if r != rate for n in names]
    for name in others:
        assert sum(getattr(r, name) for r in on.values()) == 0, name
    for entity in ENTITIES:
        assert count_independently(tmp_path / "on", entity) == on[entity]


def test_duplicates_sometimes_land_in_a_later_drop(faulty: Generated) -> None:
    lines = [line for line in read_entity(faulty.landing, "transactions") if line.status == "ok"]
    days_of: dict[str, set[date]] = defaultdict(set)
    for line in lines:
        days_of[line.text].add(line.file_day)
    assert any(len(d) > 1 for d in days_of.values())
    days_of_key: dict[tuple[str, ...], set[date]] = defaultdict(set)
    texts_of_key: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for line in lines:
        assert line.record is not None
        key = _key("transactions", line.record)
        days_of_key[key].add(line.file_day)
        texts_of_key[key].add(line.text)
    # A corrected re-send always comes in a later drop than the original.
    corrected = [k for k, texts in texts_of_key.items() if len(texts) > 1]
    assert corrected
    assert all(len(days_of_key[k]) > 1 for k in corrected)


def test_schema_drift_starts_on_its_day(faulty: Generated) -> None:
    drift_date = FAULTY.date_of(30)
    for path in sorted((faulty.landing / "transactions").iterdir()):
        header = path.read_text().splitlines()[0].split(",")
        day = date.fromisoformat(path.stem.split("_")[-1])
        assert header[-1] == ("device_type" if day >= drift_date else "transaction_ts"), path
    for line in read_entity(faulty.landing, "loan_applications"):
        if line.status == "ok":
            assert line.extra == (("application_channel",) if line.file_day >= drift_date else ())
            if line.extra:
                assert line.record["application_channel"] in ("WEB", "MOBILE", "BRANCH", "BROKER")  # type: ignore[index]
    for entity in ("customers", "repayments"):
        assert faulty.report.entities[entity].drifted_lines == 0
    assert faulty.report.entities["transactions"].drifted_lines > 0


def test_distribution_drift_changes_only_the_days_after_it(tmp_path: Path) -> None:
    base = replace(CLEAN, customers=400, days=60)
    generate(tmp_path / "base", base)
    generate(tmp_path / "drift", replace(base, drift_from_day=15, drift_strength=1.0))
    a, b = tree(tmp_path / "base"), tree(tmp_path / "drift")
    for name in a:
        day = date.fromisoformat(Path(name).stem.split("_")[-1])
        if day < base.date_of(15):
            assert a[name] == b[name], name
    fa, fb = frames(tmp_path / "base"), frames(tmp_path / "drift")
    after = base.date_of(15).isoformat()

    def later(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        return frame[frame[column] >= pd.Timestamp(after, tz="UTC")]

    ta, tb = (
        later(fa["transactions"], "transaction_ts"),
        later(fb["transactions"], "transaction_ts"),
    )
    assert len(ta) == len(tb)
    assert tb["amount"].mean() > 1.2 * ta["amount"].mean()
    gambling = lambda t: (t["merchant_category"] == "GAMBLING").mean()  # noqa: E731
    assert gambling(tb) > 1.5 * gambling(ta)
    ca, cb = later(fa["customers"], "updated_at"), later(fb["customers"], "updated_at")
    assert cb["annual_income"].median() < ca["annual_income"].median()
    ra, rb = later(fa["repayments"], "observed_at"), later(fb["repayments"], "observed_at")
    apps_after = later(fa["loan_applications"], "applied_at")["application_id"]
    ra, rb = ra[ra.application_id.isin(apps_after)], rb[rb.application_id.isin(apps_after)]
    assert len(ra) == len(rb) > 0
    assert rb["defaulted"].mean() > ra["defaulted"].mean()


# --- Realism -------------------------------------------------------------------------------------


def test_repayments_follow_their_application_28_to_70_days_later(
    default_world: Generated, default_frames: dict[str, pd.DataFrame]
) -> None:
    f = default_frames
    apps = f["loan_applications"].set_index("application_id")
    repay = f["repayments"]
    assert len(repay) > 500
    assert repay["application_id"].is_unique
    assert repay["application_id"].isin(apps.index).all()
    joined = repay.join(apps, on="application_id", rsuffix="_app")
    assert (joined["customer_id"] == joined["customer_id_app"]).all()
    delay = joined["observed_at"] - joined["applied_at"]
    assert delay.min() >= pd.Timedelta(days=28)
    assert delay.max() <= pd.Timedelta(days=70)
    # Each outcome sits in the drop of the day it was observed.
    for line in read_entity(default_world.landing, "repayments"):
        assert line.record is not None
        assert line.record["observed_at"].startswith(line.file_day.isoformat())
    # Every application old enough has its outcome; younger ones may not yet.
    end = pd.Timestamp(GeneratorConfig().date_of(90).isoformat(), tz="UTC")
    old = apps[apps["applied_at"] < end - pd.Timedelta(days=71)]
    assert old.index.isin(repay["application_id"]).all()


def test_default_rate_and_profiles_are_plausible(default_frames: dict[str, pd.DataFrame]) -> None:
    f = default_frames
    rate = f["repayments"]["defaulted"].mean()
    assert 0.08 <= rate <= 0.22
    customers = f["customers"]
    assert customers["customer_id"].nunique() == 2000
    assert customers["customer_id"].duplicated().sum() > 100  # profile updates
    assert customers["credit_score"].between(300, 850).all()
    assert customers[["annual_income", "credit_score"]].corr().iloc[0, 1] > 0.2
    txns = f["transactions"]
    assert 80_000 <= len(txns) <= 130_000
    assert set(txns["merchant_category"]) >= {"GAMBLING", "GROCERY", "TRAVEL"}
    assert set(txns["channel"]) == {"POS", "ONLINE", "ATM"}
    assert (txns["amount"] > 0).all()
    assert f["loan_applications"]["term_months"].isin([12, 24, 36, 48, 60]).all()


def test_defaults_are_learnable_but_not_trivial(default_frames: dict[str, pd.DataFrame]) -> None:
    features, target = _features(default_frames)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.3, random_state=0, stratify=target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    assert 0.65 <= auc <= 0.95


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_writes_the_drops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["datagen", "--landing-dir", str(tmp_path), "--customers", "40", "--days", "6"]
    assert main([*argv, "--to-day", "2", "--duplicate-rate", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "wrote days 0..2 (2026-01-01 .. 2026-01-03)" in out
    assert re.search(r"^transactions\s+3\s", out, re.M)
    assert re.search(r"^total\s+12\s", out, re.M)
    assert main([*argv, "--from-day", "3", "--duplicate-rate", "0.2"]) == 0
    config = GeneratorConfig(customers=40, days=6, duplicate_rate=0.2)
    generate(tmp_path / "direct", config)
    written = {k: v for k, v in tree(tmp_path).items() if not k.startswith("direct")}
    assert written == tree(tmp_path / "direct")


def test_cli_defaults_to_the_settings_landing_dir(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAKEHOUSE_HOME", str(settings.home))
    args = ["datagen", "--customers", "10", "--days", "2", "--start-date", "2025-12-30"]
    assert main(args) == 0
    assert (settings.landing_dir / "transactions" / "transactions_2025-12-31.csv").is_file()
    assert str(settings.landing_dir) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--malformed-rate", "2"], "argument --malformed-rate: must be between 0 and 1"),
        (["--late-rate", "abc"], "argument --late-rate: expected a number"),
        (["--customers", "0"], "argument --customers: must be at least 1"),
        (["--days", "-5"], "argument --days: must be at least 1"),
        (["--start-date", "2026-13-01"], "argument --start-date: expected a date"),
        (["--days", "10", "--to-day", "10"], "argument --to-day: must be below --days"),
        (["--from-day", "5", "--to-day", "4"], "argument --from-day: must not be after"),
        (["--drift-strength", "inf"], "argument --drift-strength"),
        (["--schema-drift-from-day", "x"], "argument --schema-drift-from-day"),
    ],
)
def test_cli_bad_flags_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["datagen", "--landing-dir", str(tmp_path), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: lakehouse datagen" in err
    assert message in err
    assert not any(tmp_path.iterdir())
