"""The model ids that exist, as far as hermetic mode knows: those in APIBench's API database.

Hugging Face: every entry's `api_name` plus each quoted string in its `api_call` and
`example_code` that looks like a repository id. TorchHub: repository -> model names
from `torch.hub.load(...)` calls. TensorFlow Hub: every tfhub.dev / kaggle model URL.
The result is JSON-ready and is handed to the sandbox as a file.

With a user's own database (`api_db`, any hub), hermetic mode knows that database's ids
alone, read by all three rules at once: its Hugging Face-style ids (`api_name`s and quoted
repository ids), its `torch.hub.load` repositories and models, its TF Hub / Kaggle URLs. So a
snippet loading a model of the user's zoo gets a stand-in, and one loading an id the user's
documentation never mentions fails as it would for real, APIBench's ids included.
"""

from __future__ import annotations

import re
from typing import Any

from rlaif_code.data.apibench import load_api_database
from rlaif_code.data.source import DataSource

_QUOTED = re.compile(r"""['"]([^'"\s]{2,200})['"]""")
_TORCH_HUB = re.compile(r"""torch\.hub\.load\(\s*(?:repo_or_dir\s*=\s*)?['"]([^'"]+)['"]\s*,\s*"""
                        r"""(?:model\s*=\s*)?['"]([^'"]+)['"]""")
_URL = re.compile(r"""https?://(?:tfhub\.dev|www\.kaggle\.com/models|kaggle\.com/models)/[^\s'"\)\],]+""")


def _texts(entry: dict[str, Any]) -> list[str]:
    # Some entries name the API by a call (`api_name`: "AutoModel.from_pretrained('org/x')").
    texts = [str(entry.get("api_call") or ""), str(entry.get("api_name") or "")]
    example = entry.get("example_code")
    if isinstance(example, list):
        texts.extend(str(line) for line in example)
    elif example:
        texts.append(str(example))
    return texts


def hf_ids(database: list[dict[str, Any]]) -> set[str]:
    ids: set[str] = set()
    for entry in database:
        name = entry.get("api_name")
        if isinstance(name, str) and name.strip() and " " not in name.strip():
            ids.add(name.strip())
        for text in _texts(entry):
            ids.update(_QUOTED.findall(text))
    return ids


def torchhub_ids(database: list[dict[str, Any]]) -> dict[str, set[str]]:
    repos: dict[str, set[str]] = {}
    for entry in database:
        for text in _texts(entry):
            for repo, model in _TORCH_HUB.findall(text):
                repos.setdefault(repo.split(":")[0], set()).add(model)
    return repos


def tfhub_ids(database: list[dict[str, Any]]) -> set[str]:
    urls: set[str] = set()
    for entry in database:
        for text in _texts(entry):
            urls.update(u.rstrip(".") for u in _URL.findall(text))
    return urls


def _known(hf: list[dict[str, Any]], th: list[dict[str, Any]], tf: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "hf": sorted(hf_ids(hf)),
        "th": {repo: sorted(models) for repo, models in sorted(torchhub_ids(th).items())},
        "tf": sorted(tfhub_ids(tf)),
    }


def known_hub_ids(source: DataSource | None = None, api_db: str | None = None) -> dict[str, Any]:
    """{"hf": [ids], "th": {repo: [models]}, "tf": [urls]} from the three API databases, or from `api_db` alone."""
    source = source or DataSource.resolve(None)
    if api_db:
        database = load_api_database(source, "custom", api_db)
        return _known(database, database, database)
    return _known(load_api_database(source, "hf"), load_api_database(source, "th"), load_api_database(source, "tf"))
