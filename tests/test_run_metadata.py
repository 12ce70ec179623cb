"""`edgeship.train.training.read_run_metadata`: the one reader of train's `model.json`."""

from __future__ import annotations

import json

import pytest

from edgeship.train.errors import TrainError
from edgeship.train.training import METADATA_FILE, read_run_metadata


def test_missing_model_json_is_none(tmp_path):
    assert read_run_metadata(tmp_path) is None
    assert read_run_metadata(tmp_path / "model.keras") is None


def test_reads_from_run_dir_model_path_or_the_file(tmp_path):
    meta = {"schema_version": 1, "input": {"shape": [28, 28, 1]}}
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    for path in (tmp_path, tmp_path / "model.keras", tmp_path / METADATA_FILE):
        assert read_run_metadata(path) == meta


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("{not json", "not valid JSON"), ("[1, 2]", "no 'input' block"), ("{}", "no 'input' block")],
)
def test_invalid_model_json_raises_train_error(tmp_path, text, fragment):
    (tmp_path / METADATA_FILE).write_text(text)
    with pytest.raises(TrainError, match=fragment) as info:
        read_run_metadata(tmp_path)
    assert f"path={tmp_path / METADATA_FILE}" in str(info.value)
