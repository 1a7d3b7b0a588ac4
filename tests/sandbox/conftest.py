"""Interpreters for the sandbox tests: minimal venvs (no packages, fast to make) and one
with small fake `transformers` / `huggingface_hub` / `torch` / `tensorflow_hub` / `joblib`
packages. The hermetic hooks key on module and class names, and the real libraries take
10+ s to import per snippet on this machine.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rlaif_code.sandbox.env import default_env_path, env_python
from tiny import make_minimal_venv


def exec_env_or_minimal(tmp_factory: pytest.TempPathFactory) -> Path:
    python = env_python(default_env_path())
    return python if python.exists() else make_minimal_venv(tmp_factory.mktemp("venv") / "env")


@pytest.fixture
def make_venv():
    """`make_minimal_venv`, for tests that need a venv in a folder of their own."""
    return make_minimal_venv


@pytest.fixture(scope="session")
def minimal_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_minimal_venv(tmp_path_factory.mktemp("minimal") / "env")


@pytest.fixture(scope="session")
def sandbox_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exec_env_or_minimal(tmp_path_factory)


FAKES = {
    "transformers/__init__.py": """
        from .modeling_utils import PreTrainedModel, BertModel
        from .tokenization_utils_base import AutoTokenizer
        from .pipelines import pipeline
    """,
    "transformers/modeling_utils.py": """
        class PreTrainedModel:
            @classmethod
            def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
                raise RuntimeError("the real loader would download " + str(pretrained_model_name_or_path))

        class BertModel(PreTrainedModel):
            pass
    """,
    "transformers/tokenization_utils_base.py": """
        class AutoTokenizer:
            @classmethod
            def from_pretrained(cls, name, **kwargs):
                raise RuntimeError("the real loader would download")
    """,
    "transformers/pipelines/__init__.py": """
        TASKS = {"text-classification", "sentiment-analysis"}

        def check_task(task):
            if task not in TASKS:
                raise KeyError(f"Unknown task {task}")

        def pipeline(task=None, model=None, **kwargs):
            raise RuntimeError("the real pipeline would download")
    """,
    "huggingface_hub/__init__.py": """
        from .file_download import hf_hub_download
    """,
    "huggingface_hub/errors.py": """
        class RepositoryNotFoundError(Exception):
            def __init__(self, message, *, response):
                super().__init__(message)
                self.response = response
    """,
    "huggingface_hub/file_download.py": """
        def hf_hub_download(repo_id, filename, **kwargs):
            raise RuntimeError("the real download would reach the network")
    """,
    "torch/__init__.py": """
        from . import hub
    """,
    "torch/hub.py": """
        def load(repo_or_dir, model, *args, **kwargs):
            raise RuntimeError("the real torch.hub would reach GitHub")
    """,
    "tensorflow_hub/__init__.py": """
        from .module_v2 import load
        from .keras_layer import KerasLayer
    """,
    "tensorflow_hub/module_v2.py": """
        def load(handle, tags=None, options=None):
            raise RuntimeError("the real hub.load would download " + handle)
    """,
    "tensorflow_hub/keras_layer.py": """
        class KerasLayer:
            def __init__(self, handle, trainable=False, **kwargs):
                raise RuntimeError("the real KerasLayer would download " + handle)
    """,
    "joblib/__init__.py": """
        from .numpy_pickle import load
    """,
    "joblib/numpy_pickle.py": """
        def load(filename):
            with open(filename, "rb") as handle:
                raise EOFError("an empty file")
    """,
}


@pytest.fixture(scope="session")
def fake_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake-env") / "env"
    python = make_minimal_venv(root)
    site = next(root.glob("lib/python3*/site-packages"))
    for relpath, text in FAKES.items():
        target = site / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    return python
