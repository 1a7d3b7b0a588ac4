"""Fixtures for the whole suite. Helpers that tests import live in tiny.py: the folders below
have conftest.py files of their own, so `from conftest import ...` would be ambiguous."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny import gorilla_dir


@pytest.fixture(scope="session")
def gorilla_data() -> Path:
    path = gorilla_dir()
    if not (path / "api").is_dir():
        pytest.fail(f"Gorilla data not found at {path}: set RLAIF_DATA (see README)")
    return path


# Stages resolve data through $RLAIF_DATA; point every test (and module-scoped fixture)
# at the shared copy so no test ever tries to download. Tests of the download path unset it.
os.environ["RLAIF_DATA"] = str(gorilla_dir())


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny causal LM (tests.tiny), shared read-only by every test that loads one."""
    from tiny import save_tiny_causal_lm

    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for tiny models: the 2 shared cores are often busy, and one thread is
    several times faster for them than two threads fighting over the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
