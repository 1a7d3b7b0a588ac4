"""The hub modes: hermetic stand-ins and errors, plain mode, real mode on a model cache.

The hook tests run against the fake libraries of conftest.py; the exec-env tests run
the real libraries when `rlaif exec-env` has built the exec env, and skip otherwise.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from rlaif_code.sandbox.env import default_env_path, env_python
from rlaif_code.sandbox.runner import Limits, Sandbox

KNOWN = {"hf": ["good-org/good-model"], "th": {"pytorch/vision": ["resnet18"]},
         "tf": ["https://tfhub.dev/google/good/1"]}


@pytest.fixture
def hermetic(fake_env: Path, tmp_path: Path):
    with Sandbox(fake_env, mode="hermetic", known_ids=KNOWN, temp_root=tmp_path,
                 limits=Limits(timeout=20)) as sandbox:
        yield sandbox


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
    snapshot = save_tiny_causal_lm(repo / "snapshots" / ("0" * 40))  # safetensors saved 0600: owner-only
    # Saved by this venv's transformers 5, whose tokenizer class the exec env's transformers 4
    # (pinned for APIBench's code) lacks; the fast-tokenizer class both have reads the same file,
    # and without the input names it would also return token_type_ids, which a causal LM refuses.
    tokenizer_config = snapshot / "tokenizer_config.json"
    tokenizer_config.write_text(json.dumps({**json.loads(tokenizer_config.read_text()),
                                            "tokenizer_class": "PreTrainedTokenizerFast",
                                            "model_input_names": ["input_ids", "attention_mask"]}))
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


# Loads the hooks the way bootstrap.py does, from a sandbox's support folder, in an
# interpreter that has neither rlaif_code nor any library, then patches a fake one.
LOAD_HOOKS = """
import importlib.util, json, os, sys
support, workdir = sys.argv[1], sys.argv[2]
assert importlib.util.find_spec("rlaif_code") is None
spec = importlib.util.spec_from_file_location("bootstrap", os.path.join(support, "bootstrap.py"))
bootstrap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bootstrap)
hooks = bootstrap._load_hooks(support)
with open(os.path.join(support, "known_ids.json")) as handle:
    hooks.install("hermetic", json.load(handle), workdir)
os.makedirs(os.path.join(workdir, "transformers"))
open(os.path.join(workdir, "transformers", "__init__.py"), "w").close()
with open(os.path.join(workdir, "transformers", "modeling_utils.py"), "w") as handle:
    handle.write("class BertModel:\\n    @classmethod\\n    def from_pretrained(cls, name):\\n"
                 "        raise RuntimeError(name)\\n")
sys.path.insert(0, workdir)
from transformers.modeling_utils import BertModel
known = repr(BertModel.from_pretrained("good-org/good-model"))
try:
    BertModel.from_pretrained("made-up/model")
except OSError as exc:
    unknown = str(exc)
print(json.dumps({"known": known, "unknown": unknown, "calls": hooks.CALLS,
                  "modules": {n: m.__file__ for n, m in sys.modules.items() if n.startswith("_rlaif_hermetic")},
                  "rlaif_code": [n for n in sys.modules if n.startswith("rlaif_code")]}))
"""


def test_split_hooks_load_from_the_support_folder_without_rlaif_code(minimal_python: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with Sandbox(minimal_python, mode="hermetic", known_ids=KNOWN, isolation="none", allow_unsandboxed=True,
                 temp_root=tmp_path) as sandbox:
        out = subprocess.run([str(minimal_python), "-I", "-B", "-c", LOAD_HOOKS, str(sandbox.support), str(workdir)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["known"] == "<stand-in BertModel.from_pretrained('good-org/good-model')>"
        assert "made-up/model is not a local folder" in seen["unknown"]
        assert seen["calls"] == [["BertModel.from_pretrained", "good-org/good-model", "known"],
                                 ["BertModel.from_pretrained", "made-up/model", "unknown"]]
        assert set(seen["modules"]) == {"_rlaif_hermetic", "_rlaif_hermetic.hooks", "_rlaif_hermetic.answers",
                                        "_rlaif_hermetic.patches", "_rlaif_hermetic.inputs",
                                        "_rlaif_hermetic.network", "_rlaif_hermetic.content",
                                        "_rlaif_hermetic.placeholders"}
        assert all(Path(f).parent == sandbox.support for f in seen["modules"].values())
        assert seen["rlaif_code"] == []
