"""Executability tiers: extracting and parsing code, static checks, and running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif_code.sandbox.runner import Sandbox
from rlaif_code.sandbox.tiers import (
    ExecutabilityChecker,
    extract_code,
    import_needs,
    parse_code,
    summarize,
    undefined_names,
)


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
