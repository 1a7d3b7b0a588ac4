"""APIBench records for the three hubs, or a user's own (`custom`): the API database and the example files.

HuggingFace and TensorFlow examples hold Gorilla's training text
(`###Instruction: ...\n###Output: <<<domain>>>: ...`). TorchHub's hold a
Python-dict-like string that is neither JSON nor (always) Python, so it is read by
anchoring on its known keys rather than by `ast.literal_eval`.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, iter_jsonl
from rlaif_code.data.api_db import api_index, find_api, read_api_db
from rlaif_code.data.parse import FIELDS, parse_output
from rlaif_code.data.source import HUBS, DataSource

API_FILES = {"hf": "api/huggingface_api.jsonl", "tf": "api/tensorflowhub_api.jsonl", "th": "api/torchhub_api.jsonl"}
TRAIN_FILES = {"hf": "apibench/huggingface_train.json", "tf": "apibench/tensorflow_train.json",
               "th": "apibench/torchhub_train.json"}
EVAL_FILES = {"hf": "apibench/huggingface_eval.json", "tf": "apibench/tensorflow_eval.json",
              "th": "apibench/torchhub_eval.json"}


# A user's own API database (`api_db`) and example files: no files of its own in Gorilla's data.
CUSTOM_HUB = "custom"
HUB_CHOICES = (*HUBS, CUSTOM_HUB)


def check_hub(hub: str) -> str:
    if hub not in HUB_CHOICES:
        raise InputError(f"unknown hub '{hub}' (choose one of {', '.join(HUB_CHOICES)})")
    return hub


def _gorilla_hub(hub: str, what: str) -> str:
    if check_hub(hub) == CUSTOM_HUB:
        raise InputError(f"hub '{CUSTOM_HUB}' has no {what} in Gorilla's data: "
                         + ("set api_db to your API database file" if what == "API database"
                            else "set eval_file (and train_file or extra_train_files) to your example files"))
    return hub


@dataclass(frozen=True)
class Example:
    """One APIBench item: the instruction and the five target fields, plus its reference API."""

    example_id: str  # "<file stem>:<line>", unique across files
    question_id: int  # 1-based line in its file: Gorilla's question_id for eval files
    hub: str
    instruction: str
    domain: str
    api_call: str
    provider: str
    explanation: str
    code: str
    reference_api: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # file:line
    complete: bool = True  # False when the file's answer text lacked fields, filled from metadata

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Example":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def fields(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS}


def load_api_database(source: DataSource | None, hub: str, api_db: str | Path | None = None) -> list[dict[str, Any]]:
    """`api_db` (a user's file, for any hub; `source` may then be None) or else the hub's own database from
    Gorilla's data."""
    if api_db:
        check_hub(hub)
        return read_api_db(api_db)
    if source is None:
        raise ValueError("load_api_database: no api_db and no Gorilla data source")
    return read_api_db(source.path(API_FILES[_gorilla_hub(hub, "API database")]), calls_must_parse=False)


def api_database(data: str | Path | None, hub: str, api_db: str | Path | None = None) -> list[dict[str, Any]]:
    """`load_api_database` from a data directory (None: $RLAIF_DATA, else the download cache), which is
    resolved only when the hub's own database is read: a user's `api_db` needs no Gorilla data."""
    return load_api_database(None if api_db else DataSource.resolve(data), hub, api_db)


_INSTRUCTION_RE = re.compile(r"###\s*Instruction\s*:\s*(.*?)\s*(?=###\s*Output\s*:|$)", re.S)
_OUTPUT_RE = re.compile(r"###\s*Output\s*:")


def _split_gorilla_text(text: str) -> tuple[str, str]:
    """Instruction (with any ###Input: kept) and the text after the first ###Output:."""
    match = _INSTRUCTION_RE.search(text)
    instruction = match.group(1).strip() if match else ""
    found = _OUTPUT_RE.search(text)
    output = text[found.end():] if found else ""
    return instruction, output


_DICT_KEY_RE = re.compile(r"""(?:^|[{,\s])['"](Instruction|Input|Output)['"]\s*:""")


def _split_torchhub_dict(text: str) -> tuple[str, str]:
    """Split `{'Instruction': <unquoted text>, ['Input': ...,] 'Output': {...}}`."""
    marks = list(_DICT_KEY_RE.finditer(text))
    values: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        values.setdefault(mark.group(1), text[mark.end():end])
    instruction = values.get("Instruction", "").strip().rstrip(",").strip()
    if values.get("Input"):
        instruction = f"{instruction}\n###Input: {_unquote(values['Input'])}"
    output = values.get("Output", "")
    output = re.sub(r"\}\s*$", "", output.strip())  # the outer dict's closing brace
    return instruction, output


def _unquote(value: str) -> str:
    value = value.strip().rstrip(",").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value.replace("\\'", "'").replace('\\"', '"')


def _example_from_row(row: dict[str, Any], *, hub: str, path: Path, lineno: int,
                      apis: dict[str, dict[str, Any]] | None = None) -> Example:
    text = row.get("code")
    if not isinstance(text, str):
        raise InputError(f"{path}:{lineno}: row has no string 'code' field")
    if re.match(r"\s*###\s*Instruction", text):
        instruction, output = _split_gorilla_text(text)
    elif text.lstrip().startswith("{"):
        instruction, output = _split_torchhub_dict(text)
    else:
        raise InputError(f"{path}:{lineno}: cannot parse 'code': it starts neither with "
                         f"'###Instruction' nor with a dict: {text[:80]!r}")
    if not instruction:
        raise InputError(f"{path}:{lineno}: cannot parse 'code': no instruction found")
    parsed = parse_output(output)
    api_data = row.get("api_data") if isinstance(row.get("api_data"), dict) else {}
    if not api_data and apis is not None:
        api_data = _api_of(row, parsed.fields["api_call"], apis, f"{path}:{lineno}")
    # Some rows answer in prose or omit fields; fill from the row's own metadata so every
    # example has a usable target, and remember that it was filled.
    fallback = {
        "domain": api_data.get("domain") or "",
        "api_call": row.get("api_call") or api_data.get("api_call") or "",
        "provider": row.get("provider") or api_data.get("framework") or "",
        "explanation": "",
        "code": "" if parsed.found else output.strip(),
    }
    values = {name: parsed.fields[name] or fallback[name] for name in FIELDS}
    return Example(
        example_id=f"{path.stem}:{lineno}",
        question_id=lineno,
        hub=hub,
        instruction=instruction,
        reference_api=api_data,
        source=f"{path}:{lineno}",
        complete=all(parsed.fields[name] for name in FIELDS),
        **values,
    )


def _api_of(row: dict[str, Any], answer_call: str, apis: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
    """The database document of a row written without Gorilla's `api_data`, found by its api_call."""
    call = row.get("api_call") if isinstance(row.get("api_call"), str) else answer_call
    found = find_api(apis, call) if call else None
    if found is None:
        raise InputError(f"{where}: field 'api_data' is missing and the api_call {call!r:.100} is no API of "
                         "the API database (give api_data, or an api_call as the database writes it)")
    return found


def load_examples(path: str | Path, hub: str, api_database: list[dict[str, Any]] | None = None) -> list[Example]:
    """Examples of one file; with `api_database`, a row without `api_data` gets its API's document."""
    path = Path(path)
    check_hub(hub)
    apis = api_index(api_database) if api_database is not None else None
    return [_example_from_row(row, hub=hub, path=path, lineno=lineno, apis=apis)
            for lineno, row in iter_jsonl(path)]


def load_eval_examples(source: DataSource, hub: str) -> list[Example]:
    return load_examples(source.path(EVAL_FILES[_gorilla_hub(hub, "eval file")]), hub)


def load_train_examples(source: DataSource, hub: str) -> list[Example]:
    return load_examples(source.path(TRAIN_FILES[_gorilla_hub(hub, "training file")]), hub)


def split_pool(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """The paper's split of one pool: a seeded shuffle, the last `eval_fraction` held out."""
    if not 0.0 < eval_fraction < 1.0:
        raise InputError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if not examples:
        raise InputError("cannot split an empty pool of examples")
    order = sorted(examples, key=lambda e: e.example_id)
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(order) * eval_fraction))
    return order[:-n_eval], order[-n_eval:]
