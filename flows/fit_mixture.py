"""The Prefect flow ``fit-mixture``: mixture runs in the lake -> fitted mixture laws + scores.

``fit_mixture`` fits every law family (exponential, additive, per-source) and the regression
baselines (LightGBM as in RegMix, linear) on one experiment's runs, scores them on a held-out
experiment when given (Spearman and mean relative error per domain), optionally compares the
nested and joint routes across model sizes (holding out the largest size), and stores each law
at ``<lake>/fits/<experiment>-mixture-<family>.json`` where the planner finds it.
``mixture_fit_report`` prints the result with rich (``mixplan fit --mixture``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from prefect import flow, get_run_logger
from rich.console import Console
from rich.table import Table

from mixplan.flows.config import DEFAULT_LAKE
from mixplan.flows.console import cli_console
from mixplan.planning.errors import SpecError
from mixplan.planning.mixture.evaluation import comparison_table
from mixplan.planning.mixture.nested import MixtureCurves, NestedRoute
from mixplan.planning.mixture.scale import best_mixture
from mixplan.planning.mixture.stacking import STACKED_ROUTE
from mixplan.planning.mixture.steps import losses_at_tokens
from mixplan.tasks.mixture import (
    BASELINES,
    LAW_FAMILIES,
    compare_scale_routes,
    fit_mixture_family,
    fit_name,
    load_mixture_curves,
    load_mixture_data,
    score_mixture_family,
    select_scale_route,
    store_mixture_fit,
)

LAW_FORMS = {
    "exponential": "L_i(r) = c_i + k_i exp(t_i . r)",
    "additive": "L_i(h) = E_i + 1 / sum_j C_ij h_j^gamma_ij",
    "per_source": "L_i(p) = L_inf,i + sum_j B_ij (N0_ij + D p_j)^-gamma_ij",
    "lightgbm": "LightGBM regression on the mixture (RegMix; not convex, comparison only)",
    "linear": "L_i(r) = b_i . r (least squares)",
    "nested": "step law -> size law -> additive mixture law at the target (N, D)",
    "scale": "L_i(h, N) = E_i + 1 / sum_j C_ij h_j^gamma_ij + A_i(h) / N^alpha_i at the target D "
    "(runs read at D; the route chosen by leave-largest-scale-out)",
}
ROUTE_FORMS = {
    "nested": LAW_FORMS["nested"],
    "curves (Kaplan N-D)": "per mixture and domain L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]"
    "^alpha_D on every checkpoint -> additive mixture law L_i(h) = E_i + 1 / sum_j C_ij "
    "h_j^gamma_ij at the target (N, D)",
    STACKED_ROUTE: "L_i(h) = sum_k w_k L_ik(h): every route's mixture law at the target (N, D) "
    "(additive, L_ik(h) = E_ik + 1 / sum_j C_ijk h_j^gamma_ijk [+ A_ik(h) / N^alpha_ik]), "
    "weighted by 1/MSE of leave-largest-scale-out",
}
"""The formula reported for the chosen route across scale (scale routes: ``LAW_FORMS["scale"]``)."""
HEADLINE = {"exponential": "c", "additive": "E", "per_source": "L_inf", "scale": "E"}
"""The parameter shown with its interval per domain (the loss floor of each law)."""


@flow(name="fit-mixture", log_prints=False)
def fit_mixture(
    lake: str = str(DEFAULT_LAKE),
    experiment: str = "regmix-1m-train",
    held_out_experiment: str | None = None,
    families: list[str] | None = None,
    domains: list[str] | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    hold_out_largest: bool = False,
    save: bool = True,
    all_sizes: bool = False,
    scale: bool = True,
    target_params: float | None = None,
    target_tokens: float | None = None,
) -> dict[str, Any]:
    """Fit mixture laws (and baselines) on ``experiment``; score them on held-out runs.

    Parameters
    ----------
    lake
        Lake folder or URL.
    experiment
        Experiment whose runs the laws are fitted on (final loss per run and domain).
    held_out_experiment
        Experiment scored with the fitted laws (e.g. ``regmix-1m-test``); ``None`` skips scoring.
    families
        Law families and baselines to fit (default: all of ``LAW_FAMILIES`` and ``BASELINES``).
    domains
        Validation domains to fit (default: every domain logged for all runs).
    n_bootstrap
        Bootstrap draws (resampling runs) per law family, for intervals.
    seed
        Seed of the bootstrap and of the baselines.
    hold_out_largest
        For experiments with several model sizes: also fit the nested and the joint routes on
        the smaller sizes and score each on the largest size's final checkpoints.
    save
        Store each fitted law under ``<lake>/fits/``.
    all_sizes
        The law families describe one scale: when the experiment has runs of several model
        sizes, only the largest size's runs are fitted unless this is set.
    scale
        For experiments with two or more model sizes: score the mixture routes by
        leave-largest-scale-out, refit the one that transfers best on every size at the target
        (N, D), and store it as ``<experiment>-mixture-scale``.
    target_params, target_tokens
        The target (N, D) of that law (default: the largest size at its last common step).

    Returns
    -------
    dict
        JSON-ready: ``experiment``, ``sources``, ``domains``, ``fits`` (family -> form, path,
        per-domain parameter rows), ``scores`` (held-out rows), ``routes`` (route rows),
        ``scale`` (the chosen route across scale, its selection scores, target, planned mixture
        and best observed run; ``None`` for one-size experiments; its law is also listed under
        ``fits["scale"]``).
    """
    logger = get_run_logger()
    lake = str(lake)
    families = list(families) if families else [*LAW_FAMILIES, *BASELINES]
    unknown = sorted(set(families) - set(LAW_FAMILIES) - set(BASELINES))
    if unknown:
        raise SpecError(f"fit-mixture: unknown families {unknown}")
    data, data_hash = load_mixture_data(lake, experiment, domains=domains)
    sizes = np.unique(data.params[np.isfinite(data.params)])
    size_note = "all runs"
    if len(sizes) > 1 and not all_sizes:
        data = data.subset(data.params == sizes[-1])
        size_note = f"largest model size only ({sizes[-1]:.4g} params, {len(data.run_ids)} runs)"
        logger.warning(
            "%s has %d model sizes: the one-scale laws are fitted on the %s",
            experiment,
            len(sizes),
            size_note,
        )
    held_out = None
    if held_out_experiment is not None:
        held_out, _ = load_mixture_data(lake, held_out_experiment, domains=list(data.domains))
    futures = {
        family: fit_mixture_family.submit(
            family, data, n_bootstrap if family in LAW_FAMILIES else 0, seed
        )
        for family in families
    }
    result: dict[str, Any] = {
        "experiment": experiment,
        "held_out_experiment": held_out_experiment,
        "sources": list(data.sources),
        "domains": list(data.domains),
        "runs": len(data.run_ids),
        "fitted_on": size_note,
        "fits": {},
        "scores": [],
        "routes": [],
        "scale": None,
    }
    for family, future in futures.items():
        model = future.result()
        scores = None
        if held_out is not None:
            scores = score_mixture_family(model, held_out, family)
            result["scores"].extend(scores.to_dicts())
        entry: dict[str, Any] = {"form": LAW_FORMS[family], "path": None, "params": []}
        if family in LAW_FAMILIES:
            entry["params"] = model.params_table()
            if save:
                entry["path"] = store_mixture_fit(
                    lake, fit_name(experiment, family), model, data_hash, scores, data.max_shares()
                )
        result["fits"][family] = entry
    curves = None
    if scale and len(sizes) > 1:
        curves = load_mixture_curves(lake, experiment, domains=list(data.domains))
        curves = curves.runs_where(np.isfinite(curves.params))  # a size law needs N
        chosen = select_scale_route(curves, target_params, target_tokens, n_bootstrap, seed)
        result["scale"] = scale_summary(chosen, curves)
        law = chosen_law(chosen["route"])
        result["fits"]["scale"] = {
            "form": result["scale"]["form"],
            "params": law.params_table(),
            "path": None,
        }
        if save:
            result["scale"]["path"] = result["fits"]["scale"]["path"] = store_mixture_fit(
                lake,
                fit_name(experiment, "scale"),
                law,
                data_hash,
                None,
                curves.final().max_shares(),
                {
                    "selection": result["scale"]["scores"],
                    "chosen_route": chosen["chosen"],
                    "target": chosen["target"],
                    "step_warning": chosen["step_warning"],
                    "best_observed": result["scale"]["best_observed"],
                },
            )
    if hold_out_largest:
        if curves is None:
            curves = load_mixture_curves(lake, experiment, domains=list(data.domains))
        sizes = np.unique(curves.params)
        if len(sizes) < 3:
            raise SpecError(
                f"fit-mixture: hold_out_largest needs three or more model sizes; "
                f"{experiment} has {sizes.tolist()}"
            )
        routes = compare_scale_routes(curves, float(sizes[-2]))
        result["routes"] = routes.to_dicts()
        if save:
            largest = curves.runs_where(curves.params == sizes[-1]).final()
            nested = NestedRoute(params=float(sizes[-1]), tokens=float(np.max(largest.tokens)))
            nested.fit(curves.runs_where(curves.params < sizes[-1]))
            law = nested.stored_law()
            result["fits"]["nested"] = {
                "form": LAW_FORMS["nested"],
                "params": law.params_table(),
                "path": store_mixture_fit(lake, fit_name(experiment, "nested"), law, data_hash),
            }
    logger.info("fit-mixture %s: %s", experiment, ", ".join(result["fits"]))
    return result


def chosen_law(route: Any) -> Any:
    """The stored law of a fitted route (what the planner loads): a scale route's
    :class:`AdditiveScaleLaw` at the target, the nested route's mixture law at the target,
    the stacked route's combination; each with the route's measured scale error in its
    intervals (``LawRoute.stored_law``)."""
    if getattr(route, "law_", None) is None:
        raise SpecError(f"{getattr(route, 'name', route)}: not fitted")
    return route.stored_law()


def scale_summary(chosen: dict[str, Any], curves: MixtureCurves) -> dict[str, Any]:
    """JSON-ready view of :func:`select_and_fit_route`: scores, target, the planned mixture with
    its predicted loss (and interval) next to the best observed run."""
    route, target = chosen["route"], chosen["target"]
    sources = curves.sources
    trust = curves.final().max_shares()
    planned = best_mixture(route, sources, max_shares=trust, candidates=curves.final().mixture)
    predicted = float(np.mean(route.predict(planned)))
    interval: list[float] | None = None
    law = chosen_law(route)
    if getattr(law, "n_bootstrap", 0) > 0:
        low, high = route.predict_interval(planned[None, :], level=0.9)
        interval = [float(np.mean(low)), float(np.mean(high))]
    sizes = np.unique(curves.params)
    largest = curves.runs_where(curves.params == sizes[-1])
    last = np.zeros(len(largest.run_ids))
    np.maximum.at(last, largest.row_run, largest.tokens)
    observed, _ = losses_at_tokens(largest, float(last.min()), max_ratio=1.0)
    mean_loss = observed.losses.mean(axis=1)
    best = int(np.argmin(mean_loss))
    return {
        "chosen": chosen["chosen"],
        "form": ROUTE_FORMS.get(chosen["chosen"], LAW_FORMS["scale"]),
        "target": target,
        "scores": chosen["scores"].to_dicts(),
        "step_warning": chosen["step_warning"],
        "planned": {
            "mixture": dict(zip(sources, planned.tolist(), strict=True)),
            "predicted_loss": predicted,
            "interval_90": interval,
        },
        "best_observed": {
            "run_id": observed.run_ids[best],
            "params": float(sizes[-1]),
            "tokens": float(last.min()),
            "mixture": dict(zip(sources, observed.mixture[best].tolist(), strict=True)),
            "loss": float(mean_loss[best]),
            "predicted_loss": float(np.mean(route.predict(observed.mixture[best]))),
        },
        "path": None,
    }


# ------------------------------------------------------------------------------- report


def _interval(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None:
        return "-"
    low, high = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if low is None:
        return f"{value:.4g}"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def _top_sources(row: dict[str, Any], prefix: str, *, largest: bool = True) -> str:
    values = {k[len(prefix) + 1 : -1]: v for k, v in row.items() if k.startswith(prefix + "[")}
    values = {k: v for k, v in values.items() if not k.endswith("_lo") and "]_" not in k}
    order = sorted(values, key=values.get, reverse=largest)[:3]
    return ", ".join(order)


def mixture_fit_report(result: dict[str, Any], *, console: Console | None = None) -> None:
    """Print each domain's law, parameter intervals and held-out errors (rich tables).

    Parameters
    ----------
    result
        What :func:`fit_mixture` returns.
    console
        Where to print (default: a new stdout console).
    """
    console = console or cli_console()
    console.print(
        f"[bold]Mixture laws[/bold] fitted on {result['experiment']} "
        f"({result['runs']} runs, {len(result['sources'])} sources, "
        f"{len(result['domains'])} domains; {result.get('fitted_on', 'all runs')})"
    )
    scores = pl.DataFrame(result["scores"]) if result["scores"] else None
    for family, entry in result["fits"].items():
        if not entry["params"] and scores is None:
            continue  # a baseline without held-out runs has nothing to show
        table = Table(title=f"{family}: {entry['form']}", title_justify="left")
        table.add_column("domain")
        headline = HEADLINE.get(family, "E" if family == "nested" else "")
        if entry["params"]:
            table.add_column(f"{headline} [95% CI]" if headline else "floor")
            table.add_column("objective", justify="right")
            key = {"exponential": "t", "per_source": "logB"}
            table.add_column(f"largest {key.get(family, 'logC')} (sources)")
        if scores is not None:
            table.add_column("held-out Spearman", justify="right")
            table.add_column("held-out MRE %", justify="right")
        family_scores = (
            {r["domain"]: r for r in scores.filter(pl.col("model") == family).to_dicts()}
            if scores is not None
            else {}
        )
        rows = entry["params"] or [{"domain": d} for d in result["domains"]]
        for row in rows:
            cells = [
                row["domain"]
                + (f" ({row['route']} x{row['weight']:.2f})" if "route" in row else "")
            ]
            if entry["params"]:
                prefix = {"exponential": "t", "per_source": "logB"}.get(family, "logC")
                cells += [
                    _interval(row, headline),
                    f"{row['objective']:.3g}",
                    _top_sources(row, prefix),
                ]
            if scores is not None:
                s = family_scores.get(row["domain"])
                cells += [f"{s['spearman']:.4f}", f"{100 * s['mre']:.3f}"] if s else ["-", "-"]
            table.add_row(*cells)
        if entry.get("path"):
            table.caption = f"stored at {entry['path']}"
        console.print(table)
    if scores is not None:
        for metric, label in (("spearman", "Spearman"), ("mre", "mean relative error %")):
            wide = comparison_table(scores, metric=metric)
            table = Table(title=f"Held-out {label} ({result['held_out_experiment']})")
            for column in wide.columns:
                table.add_column(column, justify="left" if column == "domain" else "right")
            for row in wide.iter_rows():
                scale = 100 if metric == "mre" else 1
                table.add_row(row[0], *[f"{scale * v:.4f}" for v in row[1:]])
            console.print(table)
    if result.get("scale"):
        _print_scale(console, result["scale"])
    if result["routes"]:
        routes = pl.DataFrame(result["routes"])
        summary = (
            routes.group_by("route")
            .agg(
                pl.col("abs_error").mean().alias("mae"),
                pl.col("abs_error").max().alias("max"),
                pl.col("rel_error").mean().alias("mre"),
                pl.len().alias("points"),
            )
            .sort("mae")
        )
        table = Table(title="Scale routes: held-out largest model, last step")
        for column in ("route", "MAE (nats)", "max error", "MRE %", "points"):
            table.add_column(column, justify="left" if column == "route" else "right")
        for row in summary.iter_rows(named=True):
            table.add_row(
                row["route"],
                f"{row['mae']:.4f}",
                f"{row['max']:.4f}",
                f"{100 * row['mre']:.3f}",
                str(row["points"]),
            )
        table.caption = f"better on held-out runs: {summary['route'][0]}"
        console.print(table)


def _print_scale(console: Console, scale: dict[str, Any]) -> None:
    """The leave-largest-scale-out scores, the chosen route and its planned mixture."""
    table = Table(
        title="Mixture routes across scale: fitted on the smaller sizes, scored on the largest"
    )
    for column in ("route", "fitted sizes", "MAE (nats)", "max error", "status"):
        table.add_column(column, justify="left" if column in ("route", "status") else "right")
    for row in scale["scores"]:
        table.add_row(
            row["route"],
            row["fit_sizes"],
            f"{row['mae']:.4f}",
            f"{row['max_error']:.4f}",
            row["status"] if row["status"] == "ok" else row["status"][:60],
        )
    target = scale["target"]
    table.caption = (
        f"chosen: {scale['chosen']}, refitted on every size for N = {target['params']:.3g}, "
        f"D = {target['tokens']:.3g}"
        + (f"; stored at {scale['path']}" if scale.get("path") else "")
    )
    if scale["scores"]:
        console.print(table)
    planned, best = scale["planned"], scale["best_observed"]
    interval = planned.get("interval_90")
    span = f" (90% {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
    mixture = ", ".join(f"{k} {v:.3f}" for k, v in planned["mixture"].items())
    console.print(
        f"planned mixture at the target ({mixture}): predicted mean loss "
        f"{planned['predicted_loss']:.4f}{span}; best observed run {best['run_id']}: "
        f"{best['loss']:.4f} (law: {best['predicted_loss']:.4f})"
    )
    if scale.get("step_warning"):
        console.print(f"[yellow]warning[/yellow]: {scale['step_warning']}")
