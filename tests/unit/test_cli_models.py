"""`driftline models list` and `models show` on the file registry: what an operator reads back (issue 17)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrainer.config import open_registry
from schemas.events import ModelVersion
from streams.cli import app

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _version(version: str, status: str, **extra: object) -> ModelVersion:
    return ModelVersion(model="asr", version=version, status=status,  # type: ignore[arg-type]
                        created_at=T0 + timedelta(minutes=int(version)), **extra)  # type: ignore[arg-type]


@pytest.fixture()
def registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    registry = open_registry(tmp_path)
    registry.record([_version("1", "promoted")])
    registry.record([_version("2", "candidate", parent_version="1", trigger_id="t-1"),
                     _version("2", "promoted", parent_version="1", trigger_id="t-1",
                              metrics={"challenger_accuracy": 0.9412})], handled_trigger="t-1")
    monkeypatch.setenv("DRIFTLINE_RETRAINER_DATA_DIR", str(tmp_path))
    return tmp_path


def test_show_prints_every_record_of_the_current_version_as_json(registry_dir: Path) -> None:
    run = CliRunner().invoke(app, ["models", "show", "asr"])
    assert run.exit_code == 0, run.output
    records = [ModelVersion.model_validate(json.loads(line)) for line in run.output.splitlines()]
    assert [(r.version, r.status, r.trigger_id) for r in records] == [("2", "candidate", "t-1"), ("2", "promoted", "t-1")]


def test_show_of_an_unknown_version_fails_naming_it(registry_dir: Path) -> None:
    run = CliRunner().invoke(app, ["models", "show", "asr", "9"])
    assert run.exit_code == 1
    assert "9" in run.output


def test_list_marks_the_current_version_and_its_headline_metric(registry_dir: Path) -> None:
    run = CliRunner().invoke(app, ["models", "list"])
    assert run.exit_code == 0, run.output
    current = [line for line in run.output.splitlines() if line.startswith("*")]
    assert len(current) == 1 and " 2 " in current[0] and "promoted" in current[0]
    assert "challenger_accuracy=0.9412" in current[0] and "parent=1" in current[0]
