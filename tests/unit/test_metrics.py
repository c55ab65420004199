"""Continual-learning metrics against hand-computed matrices (METHOD.md section 5)."""

import math

import pytest

from sleepcycle.evaluate import continual_metrics, is_correct

# Rows: after cycle i (0 = before any sleep); columns: snapshot j (0 = base knowledge).
R = [
    [0.9, 0.1, 0.0, 0.2],
    [0.8, 0.7, 0.1, 0.2],
    [0.7, 0.5, 0.6, 0.3],
    [0.6, 0.4, 0.5, 0.8],
]


def test_metrics_by_hand():
    m = continual_metrics(R)
    assert m["ACC"] == pytest.approx((0.4 + 0.5 + 0.8) / 3)
    assert m["BWT"] == pytest.approx(((0.4 - 0.7) + (0.5 - 0.6)) / 2)
    # FWT over j = 2, 3: R[j-1][j] - R[0][j]
    assert m["FWT"] == pytest.approx(((0.1 - 0.0) + (0.3 - 0.2)) / 2)
    # forgetting: j=1: max(0.7, 0.5) - 0.4 = 0.3; j=2: max(0.6) - 0.5 = 0.1
    assert m["forgetting"] == pytest.approx((0.3 + 0.1) / 2)
    forgotten = (0.1) + (0.1 + 0.2) + (0.1 + 0.1 + 0.1)
    assert m["FUAR"] == pytest.approx(forgotten / (0.7 + 0.6 + 0.8))
    assert m["acquisition"] == pytest.approx((0.7 + 0.6 + 0.8) / 3)
    assert m["base_retention"] == pytest.approx(0.6 - 0.9)


def test_perfect_memory_has_zero_forgetting():
    perfect = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    m = continual_metrics(perfect)
    assert m["BWT"] == 0 and m["forgetting"] == 0 and m["FUAR"] == 0 and m["ACC"] == 1


def test_nothing_acquired_gives_infinite_fuar_and_bad_shapes_are_refused():
    assert math.isinf(continual_metrics([[1.0, 0.0], [0.5, 0.0]])["FUAR"])
    with pytest.raises(ValueError, match="square"):
        continual_metrics([[1.0, 0.0], [0.5]])


def test_is_correct_normalises_and_accepts_aliases():
    assert is_correct(" the Velmora.", "Velmora")
    assert is_correct("Brightwave", "Brightwave Labs", ("Brightwave",))
    assert not is_correct("", "Velmora")
    assert not is_correct("Velmora Tarsk", "Velmora")
