"""Report sections built from the stages' real return shapes (fit_mixture's result dict)."""

from __future__ import annotations

from mixplan.planning.report import render_html
from mixplan.planning.report.model import Report
from mixplan.tasks.report import mixture_section

MIXTURE_RESULT = {  # the shape flows.fit_mixture.fit_mixture returns (two domains, two laws)
    "experiment": "regmix-1m-train",
    "held_out_experiment": "regmix-1m-test",
    "sources": ["arxiv", "github", "pile_cc"],
    "domains": ["arxiv", "pile_cc"],
    "runs": 512,
    "fits": {
        "additive": {
            "form": "L_i(h) = E_i + 1 / sum_j C_ij h_j^gamma_ij",
            "path": "lake/fits/regmix-1m-train-mixture-additive.json",
            "params": [
                {"domain": "arxiv", "objective": 0.0089, "E": 3.44, "E_lo": 3.426, "E_hi": 3.449},
                {"domain": "pile_cc", "objective": 0.0025, "E": 4.681},
            ],
        },
        "linear": {"form": "L_i(r) = b_i . r (least squares)", "path": None, "params": []},
    },
    "scores": [
        {"model": "additive", "domain": "arxiv", "spearman": 0.9947, "mre": 0.0179},
        {"model": "additive", "domain": "pile_cc", "spearman": 0.9937, "mre": 0.0052},
        {"model": "linear", "domain": "arxiv", "spearman": 0.7381, "mre": 0.1041},
        {"model": "linear", "domain": "pile_cc", "spearman": 0.9018, "mre": 0.0216},
    ],
    "routes": [],
}


def test_mixture_section_compares_laws_on_held_out_runs():
    section = mixture_section(MIXTURE_RESULT)
    assert section.title == "mixture laws · experiment regmix-1m-train (scored on regmix-1m-test)"
    assert section.summary == "512 runs, 3 training sources, 2 validation domains."
    comparison, floors = section.tables
    assert comparison.columns == (
        "domain",
        "additive Spearman",
        "additive MRE",
        "linear Spearman",
        "linear MRE",
    )
    assert comparison.rows[0] == ("arxiv", "0.9947", "1.79%", "0.7381", "10.41%")
    assert comparison.rows[-1][0] == "mean" and comparison.rows[-1][2] == "1.16%"
    assert floors.rows == (
        ("arxiv", "3.440", "3.426 – 3.449", "0.0089"),
        ("pile_cc", "4.681", "—", "0.0025"),
    )
    assert [figure.title for figure in section.figures] == ["held-out error by law"]
    page = render_html(Report(title="t", generated_at="now", laws=(section,)))
    assert page.count("data:image/png;base64,") == 1


def test_mixture_section_without_held_out_runs_has_no_comparison():
    result = {**MIXTURE_RESULT, "held_out_experiment": None, "scores": []}
    section = mixture_section(result)
    assert [table.caption.split(":")[0] for table in section.tables] == [
        "additive law per validation domain"
    ]
    assert section.figures == ()


def test_law_section_shows_leaderboard_coverage_and_isoflop(bundled):
    """A real Epoch fit: the section carries the leaderboard, the calibrated loss intervals
    with their measured coverage, and the isoFLOP exponents next to the parametric ones."""
    import dataclasses

    import polars as pl

    from mixplan.planning.fitting import fit_frame
    from mixplan.planning.fitting.leaderboard import leaderboard
    from mixplan.planning.report.laws import law_section

    raw = pl.read_csv(bundled / "epoch-research__analyzing-chinchilla/svg_extracted_data.csv")
    frame = raw.select(
        pl.col("Model Size").alias("params"),
        pl.col("Training FLOP").alias("flops"),
        pl.col("loss"),
    ).with_columns((pl.col("flops") / (6 * pl.col("params"))).alias("tokens"))
    board, origins = leaderboard(
        frame,
        name="epoch",
        laws=["chinchilla", "kaplan"],
        outlier_rule="drop_highest_loss:5",
        quantiles=(0.6, 0.7, 0.8),  # scored: 0.7 (calibrated on 0.6) and 0.8
    )
    fit = fit_frame(
        frame,
        "chinchilla",
        name="epoch-chinchilla",
        n_bootstrap=40,
        backtest_quantile=None,
        outlier_rule="drop_highest_loss:5",
        origins=origins["chinchilla"],
    )
    fit = dataclasses.replace(fit, leaderboard={**board, "entries": board["entries"]})
    section = law_section(fit)
    captions = [table.caption for table in section.tables]
    ranked = next(t for t in section.tables if t.caption.startswith("laws ranked"))
    assert [row[1].split(" ")[0] for row in ranked.rows] == [e["law"] for e in board["entries"]]
    assert ranked.rows[0][0] == "1" and ranked.rows[0][4].endswith("of 120")  # 72 + 48 runs
    calibrated = next(t for t in section.tables if t.columns[-1] == "90% prediction interval")
    assert len(calibrated.rows) == 2 and "measured coverage" in calibrated.caption
    assert "in-data widths per decade" in calibrated.caption  # how the width grows, learned
    assert any("90% loss intervals: measured coverage" in note for note in section.notes)
    iso = next(t for t in section.tables if t.columns[0] == "method")
    assert [row[0].split(" (")[0] for row in iso.rows] == [
        "isoFLOP approach 1",
        "isoFLOP approach 2",
        "parametric fit: beta/(alpha+beta), alpha/(alpha+beta)",
    ]
    assert iso.rows[2][1].startswith("0.51")  # 0.36718 / (0.34731 + 0.36718)
    assert len(captions) == len(set(captions))
