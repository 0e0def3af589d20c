"""The glue helpers: plain values only, and counts that agree with their nouns."""

import numpy as np
import pytest

from mtvae.glue import counted, pm


def test_counted_uses_the_singular_for_one_only():
    assert counted(1, "learning rate") == "1 learning rate"
    assert counted(3, "learning rate") == "3 learning rates"
    assert counted(0, "seed") == "0 seeds"
    assert counted(2, "family", "families") == "2 families"


def test_pm_is_mean_and_sample_std():
    assert pm([1.0, 3.0]) == f"2.0 ± {np.std([1.0, 3.0], ddof=1):.1f}"
    assert pm([2.5]) == "2.5"


def test_glue_refuses_containers():
    pytest.importorskip("myst_nb")
    from mtvae.glue import glue

    with pytest.raises(TypeError, match="plain numbers and strings"):
        glue("x", [1, 2])
