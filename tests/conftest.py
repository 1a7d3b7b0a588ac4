from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def gorilla_dir() -> Path:
    """Gorilla's files: $RLAIF_DATA if set, else the shared copy beside the checkout."""
    env = os.environ.get("RLAIF_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "gorilla")


@pytest.fixture(scope="session")
def gorilla_data() -> Path:
    path = gorilla_dir()
    if not (path / "api").is_dir():
        pytest.fail(f"Gorilla data not found at {path}: set RLAIF_DATA (see README)")
    return path


# Stages resolve data through $RLAIF_DATA; point every test (and module-scoped fixture)
# at the shared copy so no test ever tries to download. Tests of the download path unset it.
os.environ["RLAIF_DATA"] = str(gorilla_dir())
