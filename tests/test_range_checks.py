"""The shared range checks of ``decoding/errors.py`` as the datasets and diagnostics use them."""

from __future__ import annotations

import numpy as np
import pytest

from alignment.data import DatasetError, check_knobs
from decoding.diagnostics import LoopRule, detect_loop, distinct_n
from decoding.errors import ConfigError, check_count, check_range


def test_check_count_takes_numpy_integers_and_refuses_bools_and_floats():
    assert check_count("n", np.int64(3), 1) == 3 and type(check_count("n", np.int64(3), 1)) is int
    for bad in (0, True, 2.0, "2"):
        with pytest.raises(ConfigError, match=rf"n={bad!r} is out of range; allowed: an integer n >= 1"):
            check_count("n", bad, 1)


def test_check_range_raises_the_class_it_is_given():
    with pytest.raises(DatasetError, match=r"support_ratio=1.5 is out of range; allowed: 0 <= "
                                           r"support_ratio <= 1"):
        check_range("support_ratio", 1.5, 0, 1, error=DatasetError)
    with pytest.raises(DatasetError, match=r"data_size=0 is out of range; allowed: 1 <= data_size "
                                           r"<= 4 \(records in f.json\)"):
        check_knobs(0, None, 4, "f.json")
    assert check_knobs(None, None, 4, "f.json") == (4, 1.0)


def test_diagnostics_keep_taking_numpy_counts():
    loop = detect_loop([1, 2, 1, 2, 1, 2], min_cycles=np.int64(3), max_period=np.int64(2))
    assert (loop.period, loop.cycles) == (2, 3)
    assert distinct_n([[1, 2, 1, 2]], n=np.int64(2)) == pytest.approx(2 / 3)
    assert LoopRule(max_slots=np.int64(2)).max_slots == 2
    with pytest.raises(ConfigError, match=r"similarity=0 is out of range; allowed: 0 < similarity <= 1"):
        LoopRule(similarity=0)
