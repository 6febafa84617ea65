"""RMatrix metrics against hand-computed matrices, its validation, JSON round-trip and heatmap.

Conventions (1-based task index j, row 0 = the random initialisation, T tasks):
ACC = mean_j R[T][j]; BWT = mean_{j<T} (R[T][j] − R[j][j]); FWT = mean_{j≥2} (R[j−1][j] − R[0][j]);
forgetting = mean_{j<T} (max_{l∈[j,T−1]} R[l][j] − R[T][j]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.rmatrix import RMatrix

# Rows: init, after a, after b, after c. Columns: test a, b, c.
HAND = np.array(
    [
        [0.10, 0.20, 0.30],
        [0.90, 0.25, 0.35],
        [0.95, 0.80, 0.40],  # a *rose* after b: forgetting uses the max (0.95), BWT uses R[1][1] (0.90)
        [0.60, 0.50, 0.95],
    ]
)


def r_at(values: np.ndarray, row: int, task: int) -> float:
    """R[row][task] with the 1-based task index of the definitions."""
    return float(values[row, task - 1])


def reference_metrics(values: np.ndarray) -> dict[str, float]:
    """The four metrics written out loop by loop, straight from their definitions."""
    t = values.shape[1]
    acc = sum(r_at(values, t, j) for j in range(1, t + 1)) / t
    if t < 2:
        return {"acc": acc, "bwt": 0.0, "fwt": 0.0, "forgetting": 0.0}
    bwt = sum(r_at(values, t, j) - r_at(values, j, j) for j in range(1, t)) / (t - 1)
    fwt = sum(r_at(values, j - 1, j) - r_at(values, 0, j) for j in range(2, t + 1)) / (t - 1)
    forg = sum(max(r_at(values, row, j) for row in range(j, t)) - r_at(values, t, j) for j in range(1, t)) / (t - 1)
    return {"acc": acc, "bwt": bwt, "fwt": fwt, "forgetting": forg}


def test_hand_computed_three_tasks() -> None:
    r = RMatrix(("a", "b", "c"), HAND)
    assert r.T == 3
    assert r.acc() == pytest.approx((0.60 + 0.50 + 0.95) / 3)
    assert r.bwt() == pytest.approx(((0.60 - 0.90) + (0.50 - 0.80)) / 2)  # −0.30
    assert r.fwt() == pytest.approx(((0.25 - 0.20) + (0.40 - 0.30)) / 2)  # +0.075
    assert r.forgetting() == pytest.approx(((0.95 - 0.60) + (0.80 - 0.50)) / 2)  # 0.325, not −BWT
    assert r.metrics() == pytest.approx({"acc": 2.05 / 3, "bwt": -0.30, "fwt": 0.075, "forgetting": 0.325})


def test_forgetting_ignores_init_row_and_final_row() -> None:
    """The max runs over rows j..T−1 only: a high row-0 value is not 'reached', and a task that
    ends higher than ever before has negative forgetting."""
    v = np.array(
        [
            [0.99, 0.10],  # init happens to be high on a: must not count
            [0.50, 0.20],
            [0.70, 0.90],  # a ends higher than after its own training
        ]
    )
    r = RMatrix(("a", "b"), v)
    assert r.forgetting() == pytest.approx(0.50 - 0.70)
    assert r.bwt() == pytest.approx(0.70 - 0.50)
    assert r.fwt() == pytest.approx(0.20 - 0.10)


@pytest.mark.parametrize("t", [2, 3, 4, 6])
def test_random_matrices_match_definitions(t: int) -> None:
    rng = np.random.default_rng(t)
    v = rng.uniform(size=(t + 1, t))
    r = RMatrix(tuple(f"t{i}" for i in range(t)), v)
    assert r.metrics() == pytest.approx(reference_metrics(v), abs=1e-12)


def test_single_task_edge_case() -> None:
    r = RMatrix(("only",), np.array([[0.1], [0.8]]))
    assert r.T == 1
    assert r.metrics() == {"acc": pytest.approx(0.8), "bwt": 0.0, "fwt": 0.0, "forgetting": 0.0}


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (2, 3), (3,), (4, 3, 1)])
def test_shape_is_validated(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"R must be \(4, 3\)"):
        RMatrix(("a", "b", "c"), np.zeros(shape))


def test_values_are_float64_and_tasks_a_tuple() -> None:
    r = RMatrix(["a", "b"], [[0, 0], [1, 0], [1, 1]])  # type: ignore[arg-type]
    assert r.values.dtype == np.float64
    assert r.tasks == ("a", "b")


def test_json_round_trip_string_and_file(tmp_path: Path) -> None:
    r = RMatrix(("a", "b", "c"), HAND)
    text = r.to_json()
    back = RMatrix.from_json(text)
    assert back.tasks == r.tasks
    assert np.array_equal(back.values, r.values)
    assert '"bwt"' in text  # metrics travel with the matrix for human readers

    path = tmp_path / "r.json"
    assert r.to_json(path) == text
    for handle in (path, str(path)):
        again = RMatrix.from_json(handle)
        assert again.tasks == r.tasks
        assert np.array_equal(again.values, r.values)
        assert again.metrics() == r.metrics()


def test_heatmap_writes_png(tmp_path: Path) -> None:
    out = RMatrix(("a", "b", "c"), HAND).heatmap(tmp_path / "r.png")
    assert out == tmp_path / "r.png"
    data = out.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
