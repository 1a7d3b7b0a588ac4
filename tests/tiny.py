"""Tiny randomly initialised models, a tokenizer built in-process, and tiny stage outputs, for fast tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def gorilla_dir() -> Path:
    """Gorilla's files: $RLAIF_DATA if set, else the shared copy beside the checkout."""
    import os

    env = os.environ.get("RLAIF_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "gorilla")


SPECIAL = ["<pad>", "<eos>", "<unk>"]


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE (vocab ~600) trained on APIBench text, wrapped as a HF fast tokenizer."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    with (gorilla_dir() / "apibench" / "torchhub_eval.json").open() as handle:
        texts = [json.loads(line)["code"] for line in handle]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def tiny_causal_lm(seed: int = 0, hidden: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg), tok


def save_tiny_causal_lm(path: Path, seed: int = 0) -> Path:
    model, tok = tiny_causal_lm(seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_data_dir(out: Path, gorilla_data: Path, max_train: int = 6, max_eval: int = 2,
                  dev_fraction: float = 0.0) -> Path:
    """A tiny data-stage output: the first TorchHub training and eval examples (six and two by default),
    with no dev set unless asked for (PPO's selection tests ask)."""
    from rlaif_code.data import DataConfig
    from rlaif_code.data import run as run_data

    run_data(DataConfig(hub="th", data=str(gorilla_data), max_train=max_train, max_eval=max_eval,
                        dev_fraction=dev_fraction, out_dir=str(out)))
    return out


def write_samples(data_dir: Path, path: Path) -> list[dict[str, Any]]:
    """The reference answers as samples, plus broken variants (wrong import, invented API)."""
    import json

    from rlaif_code.core.artifacts import read_jsonl
    from rlaif_code.data.parse import parse_output

    rows = []
    for example in read_jsonl(data_dir / "train.jsonl"):
        variants = [example["target"], example["target"].replace("import torch", "import torchh"),
                    example["target"].replace("torch.hub.load(", "torch.hub.fetch_model(")]
        for sample_id, text in enumerate(variants):
            rows.append({"example_id": example["example_id"], "question_id": example["question_id"],
                         "sample_id": sample_id, "prompt": example["prompt"], "text": text,
                         "parsed": parse_output(text).fields, "n_tokens": 50, "finished": True})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def make_minimal_venv(where: Path) -> Path:
    """A venv without pip (fast); world-readable so an unprivileged sandbox uid can use it."""
    import os
    import subprocess
    import sys

    from rlaif_code.sandbox.env import env_python

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    os.chmod(where, 0o755)
    return env_python(where)


def register_digit_check() -> None:
    """A random tiny model's answers all fail the real checks alike, which leaves the reward
    model one class to learn. A plugin check (the registry is open to users' own checks)
    that splits gibberish roughly in half gives the wiring test both labels."""
    from rlaif_code.feedback.tools import TOOL_CHECKS

    if "test_has_digit" not in TOOL_CHECKS:
        TOOL_CHECKS.add("test_has_digit",
                        lambda ctx: ("yes", None) if any(c.isdigit() for c in ctx.text) else ("no", None))


def tiny_pipeline_config(root: Path, **sections: dict[str, Any]) -> Path:
    """A config for `rlaif run` on the tiny model, every stage at a tiny budget; `sections` update it."""
    model = save_tiny_causal_lm(root / "tiny-model")
    register_digit_check()
    rubric = root / "rubric.yaml"
    rubric.write_text(yaml.safe_dump({"name": "wiring", "questions": [
        {"id": "syntax", "text": "Is the code free of syntax errors?", "weight": 1.0, "by": "syntax"},
        {"id": "digit", "text": "Does the answer contain a digit?", "weight": 1.0, "by": "test_has_digit"}]}))
    config = {
        "run_dir": str(root / "run"),
        "seed": 1,
        "data": {"hub": "th", "max_train": 8, "max_eval": 4},
        "sft": {"model": str(model), "max_steps": 2, "batch_size": 4, "max_length": 256, "learning_rate": 1e-3},
        "sample": {"num_samples": 4, "max_new_tokens": 48, "temperature": 1.0, "batch_size": 16},
        "feedback": {"judge": "tools", "rubric": str(rubric), "threshold": 0.5},
        "reward": {"max_steps": 2, "batch_size": 4, "max_length": 256, "heldout_fraction": 0.25},
        "ppo": {"total_steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 16,
                "save_every": 1},
        "evaluate": {"sample": {"max_new_tokens": 24, "temperature": 0.0, "num_samples": 1},
                     "score": {"metrics": ["ast", "rouge", "codebleu"]}},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def save_tiny_reward_model(path: Path, tokenizer=None, seed: int = 1) -> Path:
    """A tiny random reward model (a scalar head) with the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# A user's own API database, invented: Acme's model zoo and SDK (hub `custom`). Two detectors of one
# domain (so "correct" and "exact" differ), a torch.hub model, a keyword-argument SDK call and an
# SDK call without arguments (matched by its name).
CUSTOM_APIS = [
    {"domain": "Computer Vision Object Detection", "framework": "Acme Vision", "functionality": "Object Detection",
     "api_name": "acme/widget-detector", "api_call": "AutoModel.from_pretrained('acme/widget-detector')",
     "api_arguments": ["pretrained_model_name_or_path"], "python_environment_requirements": ["transformers"],
     "example_code": "from transformers import AutoModel\nmodel = AutoModel.from_pretrained('acme/widget-detector')",
     "description": "Finds widgets in photos of factory conveyor belts. Trained on Acme's line cameras."},
    {"domain": "Computer Vision Object Detection", "framework": "Acme Vision", "functionality": "Object Detection",
     "api_name": "acme/gadget-detector", "api_call": "AutoModel.from_pretrained('acme/gadget-detector')",
     "api_arguments": [], "python_environment_requirements": "transformers", "example_code": "",
     "description": "Finds gadgets in warehouse shelf photos."},
    {"domain": "Audio Speech Recognition", "framework": "Acme Audio", "functionality": "Speech Recognition",
     "api_name": "acme/ears", "api_call": "torch.hub.load('acme/zoo', 'ears', pretrained=True)",
     "api_arguments": {"pretrained": "bool"}, "python_environment_requirements": {"torch": ">=2.0"},
     "example_code": ["import torch", "model = torch.hub.load('acme/zoo', 'ears', pretrained=True)"],
     "description": "Transcribes spoken commands on the factory floor."},
    {"domain": "Tabular Forecasting", "framework": "Acme SDK", "functionality": "Demand Forecasting",
     "api_name": "acme_sdk.Forecaster", "api_call": "acme_sdk.Forecaster(horizon=7, region='eu')",
     "api_arguments": "horizon, region", "python_environment_requirements": "acme_sdk", "example_code": None,
     "description": "Forecasts daily widget demand per sales region."},
    {"domain": "Tabular Forecasting", "framework": "Acme SDK", "functionality": "Model Listing",
     "api_name": "acme_sdk.list_models", "api_call": "acme_sdk.list_models()", "api_arguments": [],
     "python_environment_requirements": ["acme_sdk"], "example_code": "import acme_sdk\nprint(acme_sdk.list_models())",
     "description": "Lists the forecasting models your account can use."},
]

# Hand-made eval items for CUSTOM_APIS, without Gorilla's api_data: the loader finds each API by its api_call.
CUSTOM_EVAL = [
    ("Spot every widget in this conveyor camera frame.", 0, "from transformers import AutoModel\n"
     "model = AutoModel.from_pretrained('acme/widget-detector')\nboxes = model(image)"),
    ("Turn what the operator says into text.", 2, "import torch\n"
     "model = torch.hub.load('acme/zoo', 'ears', pretrained=True)\ntext = model(audio)"),
    ("How many widgets will the EU shops sell next week?", 3, "import acme_sdk\n"
     "forecast = acme_sdk.Forecaster(horizon=7, region='eu')"),
    ("Which forecasting models may I use?", 4, "import acme_sdk\nprint(acme_sdk.list_models())"),
]


def custom_answer(api: dict[str, Any], code: str, explanation: str = "1. Call it. 2. Use it.") -> str:
    from rlaif_code.data.parse import format_answer

    return format_answer({"domain": api["domain"], "api_call": api["api_call"], "provider": api["framework"],
                          "explanation": explanation, "code": code})


def write_custom_hub(root: Path) -> tuple[Path, Path]:
    """(API database, eval examples file) of the invented Acme hub, written under `root`."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    api_db, eval_file = root / "acme_api.jsonl", root / "acme_eval.jsonl"
    api_db.write_text("".join(json.dumps(api) + "\n" for api in CUSTOM_APIS))
    rows = [{"code": f"###Instruction: {instruction}\n###Output: {custom_answer(CUSTOM_APIS[i], code)}",
             "api_call": CUSTOM_APIS[i]["api_call"], "provider": CUSTOM_APIS[i]["framework"]}
            for instruction, i, code in CUSTOM_EVAL]
    eval_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return api_db, eval_file
