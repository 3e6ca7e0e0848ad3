"""The hostile-input generator: seeded, every class written, line counts read independently."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from lakehouse.cli import main
from lakehouse.medallion.contracts import LANDING_FORMATS
from lakehouse.simulation.hostile import BASE, HOSTILE_CLASSES, parse_classes, write_hostile

DAY = date(2026, 1, 4)


def _lines(path: Path, entity: str) -> int:
    """Non-blank lines as bronze splits them (CRLF, LF or CR; BOMs and spaces aside), a CSV
    header aside."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = [
        line for line in re.split(r"\r\n|\r|\n", text) if line.lstrip("\ufeff").strip(" ") != ""
    ]
    if LANDING_FORMATS[entity] == "csv":
        return max(len(lines) - 1, 0)
    return len(lines)


def test_every_class_writes_files_whose_line_counts_hold(tmp_path: Path) -> None:
    report = write_hostile(tmp_path, seed=1, day=DAY)
    assert {f.hostile_class for f in report.files} == {BASE, *HOSTILE_CLASSES}
    for f in report.files:
        assert f.path.parent == tmp_path / f.entity
        assert f.path.suffix == "." + LANDING_FORMATS[f.entity]
        assert _lines(f.path, f.entity) == f.lines, f.path.name
        assert 0 <= f.accepted <= f.lines
    assert report.lines > report.accepted > 0
    assert not list(tmp_path.rglob(".*.tmp"))  # written under a temporary name, then renamed


def test_same_seed_same_bytes_other_seed_other_values(tmp_path: Path) -> None:
    a = write_hostile(tmp_path / "a", seed=1, day=DAY)
    b = write_hostile(tmp_path / "b", seed=1, day=DAY)
    c = write_hostile(tmp_path / "c", seed=2, day=DAY)
    read = [{f.path.name: f.path.read_bytes() for f in r.files} for r in (a, b, c)]
    assert read[0] == read[1]
    assert read[0] != read[2]


def test_special_bytes_are_where_the_classes_put_them(tmp_path: Path) -> None:
    report = write_hostile(tmp_path, ["bom", "crlf", "non_utf8", "empty"], day=DAY)
    data = {f.path.name: f.path.read_bytes() for f in report.files}
    assert data["customers_hostile-bom.json"].startswith(b"\xef\xbb\xbf{")
    assert data["transactions_hostile-crlf.csv"].count(b"\r\n") == 4
    with pytest.raises(UnicodeDecodeError):
        data["customers_hostile-non_utf8.json"].decode("utf-8")
    assert data["customers_hostile-empty.json"] == b""


def test_classes_are_parsed_and_unknown_ones_named() -> None:
    assert parse_classes("all") == HOSTILE_CLASSES
    assert parse_classes("crlf, bom") == ("bom", "crlf")
    with pytest.raises(ValueError, match=r"unknown hostile class.*nope"):
        parse_classes("bom,nope")
    with pytest.raises(ValueError, match="seed"):
        write_hostile("/nonexistent", ["bom"], seed=-1)


def test_datagen_hostile_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["datagen", "--landing-dir", str(tmp_path), "--hostile", "bom,truncated"]
    assert main([*args, "--hostile-day", "2026-01-04"]) == 0
    out = capsys.readouterr().out
    assert "wrote 5 hostile file(s) of 2 class(es)" in out
    assert "transactions_hostile-truncated.csv" in out
    assert (tmp_path / "customers" / "customers_hostile-base.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["datagen", "--hostile", "nope"])
    assert exit_info.value.code == 2
    assert "unknown hostile class(es) nope" in capsys.readouterr().err
