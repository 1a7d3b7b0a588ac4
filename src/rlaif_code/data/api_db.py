"""API databases: Gorilla's three, or a user's own JSONL file of API documents in Gorilla's fields.

One JSON object per line, one API each:

| field | type | what |
| --- | --- | --- |
| domain | non-empty string | the task family: Gorilla's "correct" compares it ("Computer Vision Object Detection") |
| framework | non-empty string | who provides the API; the answer's `<<<api_provider>>>` |
| functionality | string (or list of strings) | what it does, briefly |
| api_name | non-empty string | the API's id, e.g. a model id |
| api_call | non-empty string | the call, e.g. `AutoModel.from_pretrained('org/model')` |
| api_arguments | string, list, object or null | its arguments, in any form |
| python_environment_requirements | string, list, object or null | packages it needs |
| example_code | string, list, object or null | code that uses it |
| description | non-empty string | what it is |

Other fields (Gorilla's `performance`) are kept as they are. A missing or mistyped field is an
`InputError` naming the file, the line and the field. A user's file is held to one rule more than
Gorilla's own (22 of whose api_calls are not Python): its api_call must parse as a Python call, since
matching answers against it (`ast_match`) and the argument check (`feedback.tools`) read it as one.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, iter_jsonl

TEXT_FIELDS = ("domain", "framework", "api_name", "api_call", "description")
STRUCTURED_FIELDS = ("api_arguments", "python_environment_requirements", "example_code")
API_DB_FIELDS = ("domain", "framework", "functionality", "api_name", "api_call", "api_arguments",
                 "python_environment_requirements", "example_code", "description")


def _field_problem(row: dict[str, Any], name: str) -> str | None:
    if name not in row:
        return "missing"
    value = row[name]
    if name in TEXT_FIELDS:
        return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, got {value!r:.60}"
    if name == "functionality":
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        return None if ok else f"must be a string or a list of strings, got {value!r:.60}"
    ok = value is None or isinstance(value, (str, list, dict))
    return None if ok else f"must be a string, a list, an object or null, got {type(value).__name__}"


def _call_problem(api_call: str) -> str | None:
    try:
        tree = ast.parse(api_call.strip())
    except SyntaxError as err:
        return f"is not Python ({err.msg}): {api_call!r:.80}"
    if not any(isinstance(node, ast.Call) for node in ast.walk(tree)):
        return f"is not a call: {api_call!r:.80}"
    return None


def validate_api_row(row: dict[str, Any], where: str, *, calls_must_parse: bool) -> dict[str, Any]:
    for name in API_DB_FIELDS:
        problem = _field_problem(row, name)
        if problem:
            raise InputError(f"{where}: field '{name}' {problem}" if problem != "missing"
                             else f"{where}: missing field '{name}' (an API entry has {', '.join(API_DB_FIELDS)})")
    if calls_must_parse and (problem := _call_problem(row["api_call"])):
        raise InputError(f"{where}: field 'api_call' {problem}")
    return row


def read_api_db(path: str | Path, *, calls_must_parse: bool = True) -> list[dict[str, Any]]:
    """The validated entries of an API database file, in file order."""
    path = Path(path)
    rows = [validate_api_row(row, f"{path}:{lineno}", calls_must_parse=calls_must_parse)
            for lineno, row in iter_jsonl(path)]
    if not rows:
        raise InputError(f"{path}: the API database has no entries")
    return rows


def _squeezed(text: str) -> str:
    return "".join(str(text).split())


def api_index(database: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """api_call (whitespace removed) and api_name -> entry, the first entry winning: how an example
    file that names its API without Gorilla's `api_data` finds the API's document."""
    index: dict[str, dict[str, Any]] = {}
    for entry in database:
        index.setdefault(_squeezed(entry["api_call"]), entry)
    for entry in database:
        index.setdefault(str(entry["api_name"]).strip(), entry)
    return index


def find_api(index: dict[str, dict[str, Any]], api_call: str) -> dict[str, Any] | None:
    return index.get(_squeezed(api_call)) or index.get(str(api_call).strip())
