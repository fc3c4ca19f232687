"""Shared settings of the interop tests (see test_read.py)."""

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("CKPT_FIXTURES") or REPO / "fixtures").resolve()


def pytest_report_header(config):
    return [f"ckpt interop: CKPT_BIN={os.environ.get('CKPT_BIN', '<unset>')}  CKPT_FIXTURES={FIXTURES}"]


@pytest.fixture(scope="session")
def ckpt_bin():
    """Path of the ckpt binary, from $CKPT_BIN; fails every test clearly when it is missing."""
    value = os.environ.get("CKPT_BIN")
    if not value:
        pytest.fail(
            "CKPT_BIN is not set: export CKPT_BIN=/path/to/ckpt (e.g. after `cargo build --release`, "
            "CKPT_BIN=target/release/ckpt)",
            pytrace=False,
        )
    path = shutil.which(value) or value
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"CKPT_BIN={value!r} is not an executable file", pytrace=False)
    return os.path.abspath(path)
