"""The one JSON reader (user-facing errors) and the one atomic JSON writer."""
import json

import pytest

from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.jsonio import write_json_atomic


def test_reader_names_a_directory_as_a_directory(tmp_path):
    with pytest.raises(MfnsInputError, match="is a directory"):
        read_json_file(tmp_path)


def test_reader_missing_and_broken(tmp_path):
    with pytest.raises(MfnsInputError, match="not found; run mfns-make-splits"):
        read_json_file(tmp_path / "nope.json", missing_hint="run mfns-make-splits")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MfnsInputError, match="not valid JSON"):
        read_json_file(bad)
    with pytest.raises(MfnsInputError, match=r"not valid JSON \(.*\); remove it$"):
        read_json_file(bad, invalid_hint="remove it")


def test_corrupt_compare_state_says_what_to_do(tmp_path):
    from nnunetv2_mfns.orchestration.state import read_state
    state = tmp_path / "mfns_compare_state.json"
    state.write_text("{truncated")
    with pytest.raises(MfnsInputError, match="remove it or use another --workdir"):
        read_state(state)


def test_writer_round_trip_and_failure_keeps_old_file(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic({"a": 1}, target)
    assert read_json_file(target) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, target)  # not serialisable: the old content must survive
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
