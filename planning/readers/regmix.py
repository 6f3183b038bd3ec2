"""Wide mixture tables joined on an index: RegMix's mixture file + per-domain loss file.

``train_mixture_1m.csv`` has ``index`` and one weight column per training domain
(``train_the_pile_<domain>``); ``train_pile_loss_1m.csv`` has ``index`` and one validation loss
column per domain (``metric/the_pile_<domain>_val_loss``). Reading the mixture file reads its
partner loss file (``mixture`` -> ``pile_loss`` in the name) too; the two are one source.

Each index is one run (1M parameters, 1B tokens per the RegMix paper; recorded in tags), with
its mixture as a list of (domain, weight); each loss column gives one metrics row (split
``val``, domain = the Pile domain, step ``FINAL_STEP``). The experiment is
``regmix-1m-<prefix>`` where ``<prefix>`` is the file-name prefix (``train`` / ``test``), so the
512 training mixtures and the 256 held-out ones stay apart. The published weights are rounded to
3 decimals, so their sums are off by up to 0.5e-3 per domain: the mixture tolerance is
``0.5e-3 * n_domains`` and accepted mixtures are renormalised (original sum in tags).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from mixplan.planning.readers.base import (
    ReaderOutput,
    failed,
    mixture_from_columns,
    read_text_table,
    run_id,
    run_rows,
    single,
)
from mixplan.planning.schema import FINAL_STEP
from mixplan.planning.validation import coerce_numeric, split_by_checks

REGMIX_PARAMS = 1e6
REGMIX_TOKENS = 1e9
_WEIGHT = re.compile(r"^train_(?:the_pile_)?(?P<domain>.+)$")
_LOSS = re.compile(r"^metric/(?:the_pile_)?(?P<domain>.+?)(?:_val_loss)?$")


def partner_loss_file(mixture_file: Path) -> Path:
    """The loss file that goes with a RegMix mixture file."""
    return mixture_file.with_name(mixture_file.name.replace("mixture", "pile_loss"))


def mixture_file_of(loss_file: Path) -> Path:
    """The mixture file that reads a RegMix loss file (the inverse of ``partner_loss_file``)."""
    return loss_file.with_name(loss_file.name.replace("pile_loss", "mixture"))


def read_regmix(path: Path) -> ReaderOutput:
    """Read a RegMix mixture file and its partner loss file as one source."""
    loss_path = partner_loss_file(path)
    if not loss_path.is_file():
        return failed(path, "unreadable_file", f"partner loss file {loss_path.name} not found")
    warnings: list[str] = []
    mixture = read_text_table(path, warnings=warnings)
    if isinstance(mixture, ReaderOutput):
        return mixture
    losses = read_text_table(loss_path, warnings=warnings)
    if isinstance(losses, ReaderOutput):
        return losses
    weight_columns = [c for c in mixture.columns if _WEIGHT.match(c)]
    loss_columns = [c for c in losses.columns if _LOSS.match(c)]
    domains = [_WEIGHT.match(c)["domain"] for c in weight_columns]
    prefix = path.name.split("_")[0]
    experiment = f"regmix-1m-{prefix}"
    tolerance = 0.5e-3 * len(weight_columns)

    mixture, q_mix = coerce_numeric(
        mixture, dict.fromkeys(["index", *weight_columns], pl.Float64), source_file=str(path)
    )
    losses, q_loss = coerce_numeric(
        losses, dict.fromkeys(["index", *loss_columns], pl.Float64), source_file=str(loss_path)
    )
    name = pl.format("mix{}", pl.col("index").cast(pl.Int64))
    runs = run_rows(
        mixture,
        experiment=experiment,
        name=name,
        source_file=path,
        assumptions=(
            "params 1M and tokens 1B from the RegMix paper (not in the file); "
            "weights renormalised to sum 1 (published with 3 decimals)"
        ),
        tags={
            "index": pl.col("index").cast(pl.Int64),
            "weight_sum_published": pl.sum_horizontal(weight_columns),
        },
        params=pl.lit(REGMIX_PARAMS),
        tokens=pl.lit(REGMIX_TOKENS),
        flops=pl.lit(6 * REGMIX_PARAMS * REGMIX_TOKENS),
        flop_convention=pl.lit("6ND"),
        mixture=mixture_from_columns(domains, weight_columns),
    )
    # loss rows whose index has no mixture row cannot be interpreted
    known = mixture["index"].to_list()
    losses, q_orphan = split_by_checks(
        losses,
        [(~pl.col("index").is_in(known), "index", "missing_field")],
        source_file=str(loss_path),
    )
    metrics = (
        losses.unpivot(index=["index", "source_line"], on=loss_columns, variable_name="_column")
        .with_columns(pl.col("_column").str.extract(_LOSS.pattern, 1).alias("domain"))
        .select(
            run_id(experiment, name).alias("run_id"),
            pl.lit(FINAL_STEP).alias("step"),
            pl.lit(REGMIX_TOKENS).alias("tokens_seen"),
            pl.lit("val").alias("split"),
            "domain",
            pl.col("value").alias("loss"),
            pl.lit("nats").alias("loss_kind"),
            pl.lit(str(loss_path)).alias("source_file"),
            "source_line",
        )
    )
    return ReaderOutput(
        chunks=single(runs, metrics, pl.concat([q_mix, q_loss, q_orphan])),
        partner_files=[str(loss_path)],
        warnings=warnings,
        mixture_tolerance=tolerance,
        normalise_mixture=True,
    )
