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
