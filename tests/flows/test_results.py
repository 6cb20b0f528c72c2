"""Prefect's result files: a Stepline flow that raises keeps no pickle of it; old files are swept."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

from flows.results import discard_failure_result, sweep

pytestmark = pytest.mark.usefixtures("prefect_harness")

RAW = "model said: Jane Roe, IBAN DE89370400440532013000"


class Leaky(Exception):
    """Stands for a StepFailed carrying a model's raw output."""


def raise_leaky() -> None:
    raise Leaky(RAW)


def test_a_failing_flow_run_leaves_no_pickle_of_its_exception(tmp_path: Path) -> None:
    plain = flow(name="plain", persist_result=False)(raise_leaky)
    ours = flow(name="ours", persist_result=False, on_failure=[discard_failure_result])(raise_leaky)

    with (
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "plain"}),
        pytest.raises(Leaky),
    ):
        plain()
    with (
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "ours"}),
        pytest.raises(Leaky),
    ):
        ours()

    # Prefect writes the exception whatever persist_result says: the hook is what removes it.
    [kept] = (tmp_path / "plain").iterdir()
    assert RAW.encode() in base64.b64decode(kept.read_bytes())  # the cloudpickle holds the raw output
    assert list((tmp_path / "ours").iterdir()) == []


def test_sweep_deletes_old_result_files_and_makes_the_rest_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_HOME", str(tmp_path))
    folder = tmp_path / "prefect-results"
    folder.mkdir()
    old, new = folder / "old", folder / "new"
    for path in (old, new):
        path.write_bytes(b"pickle")
        path.chmod(0o644)
    an_hour_ago = time.time() - 3700
    os.utime(old, (an_hour_ago, an_hour_ago))

    assert sweep() == 1

    assert not old.exists()
    assert oct(new.stat().st_mode & 0o777) == "0o600"
