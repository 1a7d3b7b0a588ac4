"""The report's paired bootstrap of RLAIF - SFT over eval items."""

from __future__ import annotations

import pytest

from rlaif_code.core.artifacts import InputError
from rlaif_code.report.tables import paired_bootstrap


def test_paired_bootstrap_constant_difference_has_a_zero_width_interval():
    a = {str(i): 0.0 for i in range(50)}
    b = {str(i): 1.0 for i in range(50)}
    assert paired_bootstrap(a, b, 200, 0) == (1.0, 1.0, 1.0, 50)


def test_paired_bootstrap_interval_contains_the_mean_and_pairs_by_item():
    a = {str(i): float(i % 2) for i in range(100)}
    b = {str(i): float(i % 3 == 0) for i in range(100)}
    b["extra"] = 1.0  # items only one side has are left out
    mean, low, high, n = paired_bootstrap(a, b, 500, 1)
    assert n == 100 and low <= mean <= high and high - low > 0
    with pytest.raises(InputError):
        paired_bootstrap({"x": 1.0}, {"y": 1.0}, 10, 0)


def test_failures_are_counted_by_cause_per_model():
    from rlaif_code.report.tables import exec_failure_table, failure_cause

    assert failure_cause("parse: empty code") == "no code"
    assert failure_cause("parse: SyntaxError: invalid syntax (<unknown>, line 1)") == "does not parse"
    assert failure_cause("run: ModuleNotFoundError: No module named 'torchaudio'") == "package not in the exec env"
    assert failure_cause("run: OSError: google/bert-xl is not a local folder and is not a valid model identifier "
                         "listed on 'https://huggingface.co/models'") == "unknown model id"
    assert failure_cause("run: KeyError: \"Unknown task audio-to-audio, available tasks are [...]\"") == \
        "unknown pipeline task"
    assert failure_cause("run: ImportError: cannot import name 'cached_download'") == "library version drift"
    assert failure_cause("run: NameError: name 'torch' is not defined") == "undefined name (no import or definition)"
    assert failure_cause("run: timeout") == "timed out"
    assert failure_cause("run: ValueError: bad shape") == "other (ValueError)"
    evals = {
        "sft": {"label": "SFT", "items": [{"exec_failure": "parse: empty code"}, {"exec_failure": None},
                                         {"exec_failure": "run: NameError: name 'x' is not defined"},
                                         {"exec_failure": "parse: empty code"}]},
        "reference": {"label": "reference", "items": [{"exec_failure": "run: NameError: name 'y' is not defined"}]},
        "gorilla": {"label": "Gorilla", "items": [{"outcome": "correct"}]},  # scored without executability
    }
    assert exec_failure_table(evals) == [["cause", "SFT", "reference"], ["no code", "2", "0"],
                                         ["undefined name (no import or definition)", "1", "1"]]
    assert exec_failure_table({"gorilla": evals["gorilla"]}) == []
