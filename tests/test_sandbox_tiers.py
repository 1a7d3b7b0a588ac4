"""Executability tiers and the hermetic hub.

The hook tests run against small fake `transformers` / `huggingface_hub` / `torch`
packages installed into a minimal venv: the hooks key on module and class names, and
the real libraries take 10+ s to import per snippet on this machine. The last test
runs the real libraries, in the exec env, when `rlaif exec-env` has built it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rlaif_code.sandbox.env import default_env_path, env_python
from rlaif_code.sandbox.runner import Limits, Sandbox
from rlaif_code.sandbox.tiers import (
    ExecutabilityChecker,
    extract_code,
    import_needs,
    parse_code,
    summarize,
    undefined_names,
)
from test_sandbox_runner import make_minimal_venv

KNOWN = {"hf": ["good-org/good-model"], "th": {"pytorch/vision": ["resnet18"]},
         "tf": ["https://tfhub.dev/google/good/1"]}

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


@pytest.fixture(scope="module")
def fake_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake-env") / "env"
    python = make_minimal_venv(root)
    site = next(root.glob("lib/python3*/site-packages"))
    for relpath, text in FAKES.items():
        target = site / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    return python


@pytest.fixture
def hermetic(fake_env: Path, tmp_path: Path):
    with Sandbox(fake_env, mode="hermetic", known_ids=KNOWN, temp_root=tmp_path,
                 limits=Limits(timeout=20)) as sandbox:
        yield sandbox


def test_extract_code_strips_fences() -> None:
    assert extract_code("```python\nimport os\nprint(1)\n```") == "import os\nprint(1)"
    assert extract_code("x = 1") == "x = 1"
    assert extract_code(None) == ""


def test_parse_and_static_helpers() -> None:
    assert parse_code("print(1)")[0] is not None
    tree, error = parse_code("def broken(:\n")
    assert tree is None and error.startswith("SyntaxError")
    assert parse_code("")[1] == "empty code"
    tree, _ = parse_code("import os.path\nfrom a.b import c, d\nfrom . import e\nprint(undefined_thing)")
    assert undefined_names(tree) == ["undefined name 'undefined_thing'"]
    needs = import_needs(tree)
    assert needs.modules == {"os", "os.path", "a", "a.b"}
    assert needs.names == {("a.b", "c"), ("a.b", "d")} and needs.relative == ["."]


def test_tiers_parse_static_run(fake_env: Path, tmp_path: Path) -> None:
    codes = [
        "import json\nprint(json.dumps([1]))",  # passes every tier
        "def broken(:",  # fails to parse
        "import json\nprint(jsn.dumps(1))",  # undefined name: static and run fail
        "import not_installed_pkg\nnot_installed_pkg.go()",  # missing package
        "from json import no_such_function",  # the module exists, the name does not
        "import json\nif False:\n    undefined_later()\nprint('ran')",  # static fails, run passes
    ]
    with Sandbox(fake_env, temp_root=tmp_path) as sandbox:
        verdicts = ExecutabilityChecker(sandbox, workers=2).check(codes, "run")
    assert [v.parse for v in verdicts] == [True, False, True, True, True, True]
    assert [v.static for v in verdicts] == [True, False, False, False, False, False]
    assert [v.run for v in verdicts] == [True, False, False, False, False, True]
    assert verdicts[3].static_missing == ["not_installed_pkg"] and verdicts[3].run_missing == "not_installed_pkg"
    assert verdicts[4].static_problems == ["cannot import name no_such_function from json"]
    summary = summarize(verdicts, "run")
    assert summary["parse"] == pytest.approx(5 / 6) and summary["run"] == pytest.approx(2 / 6)
    assert summary["run_failures_missing_package"] == 1 and summary["static_failures_missing_package"] == 1
    assert summary["run_missing_packages"] == {"not_installed_pkg": 1}
    static_only = summarize(verdicts, "static")
    assert "run" not in static_only and static_only["static"] == pytest.approx(1 / 6)


def test_hermetic_known_ids_load_stand_ins(hermetic: Sandbox) -> None:
    code = """
        from transformers import BertModel, AutoTokenizer, pipeline
        import torch
        tokenizer = AutoTokenizer.from_pretrained('good-org/good-model')
        model = BertModel.from_pretrained('good-org/good-model')
        model.eval()
        inputs = tokenizer('a sentence', return_tensors='pt')
        outputs = model(**inputs)
        best = outputs.logits.argmax(-1).item()
        labels = ['negative', 'positive']
        print(labels[best], model.config.id2label[best], f"{outputs.score:.2f}", len(outputs))
        classifier = pipeline('sentiment-analysis', model='good-org/good-model')
        for result in classifier(['great']):
            print(result['label'])
        net = torch.hub.load('pytorch/vision:v0.10.0', 'resnet18', pretrained=True)
        net.eval()
        model, decoder, utils = torch.hub.load(repo_or_dir='pytorch/vision', model='resnet18')
        first, *rest, last = net(inputs)
        print(len(rest))
        import tensorflow_hub as hub
        embed = hub.load('https://tfhub.dev/google/good/1?tf-hub-format=compressed')
        print(embed(['hello']))
        layer = hub.KerasLayer('https://tfhub.dev/google/good/1/', trainable=False)
    """
    result = hermetic.run(textwrap.dedent(code))
    assert result.ok, result.stderr
    assert result.stdout.splitlines()[0].startswith("negative <stand-in")
    assert "0.00" in result.stdout and "\n0\n" in result.stdout  # `first, *rest, last` left rest empty


@pytest.mark.parametrize("code, error_type, message", [
    ("from transformers import BertModel\nBertModel.from_pretrained('made-up/model')", "OSError",
     "is not a local folder and is not a valid model identifier"),
    ("from transformers import pipeline\npipeline('text-classification', model='made-up/model')", "OSError",
     "made-up/model"),
    ("from transformers import pipeline\npipeline('invent-a-task')", "KeyError", "Unknown task"),
    ("from huggingface_hub import hf_hub_download\nhf_hub_download('made-up/repo', 'model.bin')",
     "huggingface_hub.errors.RepositoryNotFoundError", "Repository Not Found"),
    ("import torch\ntorch.hub.load('pytorch/vision', 'resnet9000')", "RuntimeError", "Cannot find callable"),
    ("import torch\ntorch.hub.load('someone/nothing', 'resnet18')", "urllib.error.HTTPError", "Not Found"),
    ("import tensorflow_hub as hub\nhub.load('https://tfhub.dev/google/made-up/1')", "urllib.error.HTTPError",
     "Not Found"),
])
def test_hermetic_unknown_ids_raise_the_real_error(hermetic: Sandbox, code: str, error_type: str,
                                                    message: str) -> None:
    result = hermetic.run(code)
    assert result.status == "exception" and result.exception_type == error_type
    assert message in result.exception_message


def test_hermetic_downloads_and_local_paths(hermetic: Sandbox) -> None:
    code = """
        import os, joblib
        from huggingface_hub import hf_hub_download
        from transformers import BertModel
        path = hf_hub_download(repo_id='good-org/good-model', filename='sklearn_model.joblib')
        model = joblib.load(path)
        print(model.predict([[1, 2]]))
        os.makedirs('saved', exist_ok=True)
        BertModel.from_pretrained('saved')  # an existing local folder goes to the real loader
    """
    result = hermetic.run(textwrap.dedent(code))
    assert result.status == "exception" and "the real loader would download saved" in result.exception_message
    assert "<stand-in load('sklearn_model.joblib')>" in result.stdout


def test_plain_mode_leaves_libraries_alone(fake_env: Path, tmp_path: Path) -> None:
    with Sandbox(fake_env, mode="plain", temp_root=tmp_path) as sandbox:
        result = sandbox.run("from transformers import BertModel\nBertModel.from_pretrained('good-org/good-model')")
    assert result.exception_type == "RuntimeError" and "would download" in result.exception_message


def test_hermetic_real_libraries_in_exec_env(tmp_path: Path) -> None:
    python = env_python(default_env_path())
    if not python.exists():
        pytest.skip("no exec env: build it with `rlaif exec-env` to test the real libraries")
    known = {"hf": ["distilbert-base-uncased-finetuned-sst-2-english"], "th": {}, "tf": []}
    good = textwrap.dedent("""
        from transformers import AutoTokenizer, AutoModelForSequenceClassification
        import torch
        name = 'distilbert-base-uncased-finetuned-sst-2-english'
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(name)
        with torch.no_grad():
            logits = model(**tokenizer('fine', return_tensors='pt')).logits
        print(model.config.id2label[torch.softmax(logits, dim=-1).argmax().item()])
    """)
    bad = "from transformers import AutoModel\nAutoModel.from_pretrained('made-up/not-a-model')"
    with Sandbox(python, mode="hermetic", known_ids=known, temp_root=tmp_path,
                 limits=Limits(timeout=120)) as sandbox:
        ok, unknown = sandbox.run_many([good, bad], workers=2)
    assert ok.ok, ok.stderr
    assert unknown.exception_type == "OSError" and "not a valid model identifier" in unknown.exception_message


def test_real_mode_loads_from_a_read_only_hf_cache(tmp_path: Path) -> None:
    python = env_python(default_env_path())
    if not python.exists():
        pytest.skip("no exec env: build it with `rlaif exec-env` to test real mode")
    from tiny import save_tiny_causal_lm

    # A Hugging Face cache holding one tiny model, laid out as hub downloads leave it.
    repo = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-llama"
    save_tiny_causal_lm(repo / "snapshots" / ("0" * 40))  # safetensors saved 0600: owner-only
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    code = textwrap.dedent("""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained('tiny-org/tiny-llama')
        model = AutoModelForCausalLM.from_pretrained('tiny-org/tiny-llama')
        out = model.generate(**tokenizer('import', return_tensors='pt'), max_new_tokens=2, do_sample=False)
        print(tuple(out.shape))
    """)
    with Sandbox(python, mode="real", hf_cache=tmp_path / "hf", temp_root=tmp_path,
                 limits=Limits(timeout=120)) as sandbox:
        loaded = sandbox.run(code)
    assert loaded.ok, loaded.stderr
    assert loaded.stdout.strip() == "(1, 3)"
    assert sorted(p.name for p in (repo / "snapshots" / ("0" * 40)).iterdir())[0] == "config.json"


def test_known_hub_ids_from_the_api_database(gorilla_data: Path) -> None:
    from rlaif_code.data.source import DataSource
    from rlaif_code.sandbox.hub_ids import known_hub_ids

    known = known_hub_ids(DataSource.resolve(gorilla_data))
    assert {"YituTech/conv-bert-base", "dmis-lab/biobert-v1.1"} <= set(known["hf"])
    assert "Sahajtomar/German_Zeroshot" in known["hf"]  # named only inside its api_name call
    assert "resnet18" in known["th"]["pytorch/vision"] and "slow_r50" in known["th"]["facebookresearch/pytorchvideo"]
    assert "https://tfhub.dev/google/universal-sentence-encoder/4" in known["tf"]
