"""The joint L(N, D) fit on a synthetic Chinchilla grid recovers its exponents and the compute-optimal
allocation; degenerate data raise the degeneracy warnings; the envelope is the cells no cheaper cell beats."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.figures import frontier_figure  # noqa: E402
from analysis.fits import fit_scaling  # noqa: E402
from analysis.frontier import compute_frontier, envelope  # noqa: E402

TRUE = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}


def grid(A=TRUE["A"], noise=0.002, seeds=3):
    N, D = np.meshgrid(np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e11, 5))
    N, D = np.repeat(N.ravel(), seeds), np.repeat(D.ravel(), seeds)
    L = TRUE["E"] + A / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    L = L * np.exp(np.random.default_rng(0).normal(0, noise, len(L)))
    return pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "loss": L})


def test_chinchilla_grid_recovers_exponents_and_allocation_without_warnings():
    runs = grid()
    res = fit_scaling("chinchilla", runs[["N", "D"]].to_numpy(), runs["loss"].to_numpy(), bootstrap_b=40, seed=0)
    for k in ("alpha", "beta", "E"):
        assert res.params[k] == pytest.approx(TRUE[k], rel=0.15)
        assert res.ci95[k][0] > 0
    assert not [w for w in res.warnings if w.startswith("degenerate")], res.warnings
    fr = compute_frontier(runs, res, bootstrap_b=40, seed=0)
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    law = fr["law_fit"]
    assert law["available"] and law["a"] + law["b"] == pytest.approx(1.0)
    assert law["a"] == pytest.approx(a_true, abs=0.05) and law["a_ci95"][0] < law["a"] < law["a_ci95"][1]
    assert fr["kappa"] == pytest.approx(6.0)
    joint = {"fit": res, "frontier": fr, "metric": "val_loss_token", "curve": "synthetic"}
    assert frontier_figure(joint) is not None


def test_degenerate_data_warn():
    runs = grid(A=0.0)  # the loss does not depend on N: alpha and A are not identified
    res = fit_scaling("chinchilla", runs[["N", "D"]].to_numpy(), runs["loss"].to_numpy(), bootstrap_b=40, seed=0)
    deg = [w for w in res.warnings if w.startswith("degenerate")]
    assert deg, res.warnings
    assert any("alpha" in w or " A " in w or "E =" in w for w in deg)


def test_envelope_keeps_only_cells_no_cheaper_cell_beats():
    cells = pd.DataFrame({"N": [1, 1, 2, 2, 4], "D": [1, 2, 1, 2, 4], "C": [1.0, 2, 2.5, 4, 16],
                          "loss": [3.0, 2.5, 2.7, 2.0, 2.1]})
    env = envelope(cells)
    assert env["C"].tolist() == [1.0, 2.0, 4.0]  # 2.5 is beaten by the cheaper 2.0; 16 by 4
    fr = compute_frontier(cells.assign(loss=cells["loss"]), None, bootstrap_b=0)
    assert fr["envelope_fit"]["available"] and fr["law_fit"] == {"available": False, "reason": "no joint L(N, D) fit"}
