"""One-row-per-run tables: Epoch's Chinchilla CSV, datablations, Sardana, StepLaw, Tao.

Each table row becomes one run and one final-loss metrics row (``step = FINAL_STEP``), except
Tao's table, whose rows are 20 checkpoints of each of 60 runs. Every conversion a reader makes
is written into the run's ``tags`` (key ``assumptions``) so that it can be audited.

========================  =====================  ===========================================
format                    experiment             what becomes what
========================  =====================  ===========================================
``epoch-chinchilla``      ``epoch-chinchilla``   N = ``Model Size``, C = ``Training FLOP``,
                                                 D = C / (6N), flop_convention ``6ND``,
                                                 ``loss`` -> split train, final step
``datablations``          ``datablations``       N, D, U, ``val_loss`` -> split val; repeated
                                                 names (seeds) become ``<name>-r<k>``
``sardana``               ``sardana``            N = Parameters, D = Tokens,
                                                 batch = ``Batch Size`` x 2048 tokens
                                                 (assumed MPT sequence length), ``Smoothed
                                                 Loss`` -> split train; evals in tags
``steplaw``               ``steplaw``            non-embedding N, D, lr, width/depth/heads;
                                                 context = D / (bs x ti) rounded to a
                                                 power of two (2048 for every row),
                                                 batch = bs x context tokens; ``smooth loss``
                                                 -> split train (raw ``loss`` in tags)
``tao-vocab``             ``tao-vocab``          one run per (N_nv, V); width = embed_dim,
                                                 vocab_params = V d, tokens = chars x f(V),
                                                 ``Lossu`` -> loss_kind unigram_normalized,
                                                 step = checkpoint index 1..20
========================  =====================  ===========================================
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mixplan.planning.readers.base import ReaderOutput, read_text_table, run_id, run_rows, single
from mixplan.planning.schema import FINAL_STEP
from mixplan.planning.validation import coerce_numeric

SARDANA_CONTEXT = 2048
"""Sequence length assumed for Sardana et al.'s MPT runs (batch sizes are in sequences)."""


def tao_tokens_per_character(vocab_size: pl.Expr) -> pl.Expr:
    """Tao et al.'s tokens per character ``f(V)`` (V clipped at 200,000), laws.md 1.5 / G14."""
    log_v = vocab_size.clip(upper_bound=200_000).log()
    return 0.00639222 * log_v**2 - 0.15811069 * log_v + 1.20470122


def _prepare(
    path: Path, numeric: dict[str, pl.DataType], warnings: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame] | ReaderOutput:
    table = read_text_table(path, warnings=warnings)
    if isinstance(table, ReaderOutput):
        return table
    return coerce_numeric(table, numeric, source_file=str(path))


def _final_metric(
    experiment: str, name: pl.Expr, loss: str, split: str, path: Path, **extra: pl.Expr
) -> list[pl.Expr]:
    return [
        run_id(experiment, name).alias("run_id"),
        pl.lit(FINAL_STEP).alias("step"),
        pl.lit(split).alias("split"),
        pl.lit("all").alias("domain"),
        pl.col(loss).alias("loss"),
        pl.lit("nats").alias("loss_kind"),
        pl.lit(str(path)).alias("source_file"),
        "source_line",
        *[expr.alias(key) for key, expr in extra.items()],
    ]


def read_epoch_chinchilla(path: Path) -> ReaderOutput:
    """Epoch AI's digitised Chinchilla runs (``svg_extracted_data.csv``)."""
    warnings: list[str] = []
    prepared = _prepare(
        path,
        {"Model Size": pl.Float64, "Training FLOP": pl.Float64, "loss": pl.Float64},
        warnings,
    )
    if isinstance(prepared, ReaderOutput):
        return prepared
    table, quarantine = prepared
    experiment = "epoch-chinchilla"
    name = pl.format("row{}", pl.col("source_line") - 1)
    runs = run_rows(
        table,
        experiment=experiment,
        name=name,
        source_file=path,
        assumptions="tokens = flops / (6 * params)",
        tags={"svg_x": pl.col("x"), "svg_y": pl.col("y"), "color": pl.col("color")},
        params=pl.col("Model Size"),
        tokens=pl.col("Training FLOP") / (6 * pl.col("Model Size")),
        flops=pl.col("Training FLOP"),
        flop_convention=pl.lit("6ND"),
    )
    metrics = table.select(_final_metric(experiment, name, "loss", "train", path))
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)


def read_datablations(path: Path) -> ReaderOutput:
    """Muennighoff et al.'s data-constrained runs (``parametric_fit_runs.csv``)."""
    warnings: list[str] = []
    prepared = _prepare(
        path,
        {
            "params_N": pl.Float64,
            "tokens_D": pl.Float64,
            "unique_tokens_U": pl.Float64,
            "val_loss": pl.Float64,
        },
        warnings,
    )
    if isinstance(prepared, ReaderOutput):
        return prepared
    table, quarantine = prepared
    experiment = "datablations"
    table = table.with_columns(
        (pl.col("source_line").rank("ordinal").over("name")).cast(pl.Int64).alias("_replicate")
    )
    name = pl.format("{}-r{}", pl.col("name"), pl.col("_replicate"))
    runs = run_rows(
        table,
        experiment=experiment,
        name=name,
        source_file=path,
        assumptions="flops = 6 * params * tokens; r<k> = k-th row of the name",
        tags={
            "name": pl.col("name"),
            "replicate": pl.col("_replicate"),
            "epochs": pl.col("tokens_D") / pl.col("unique_tokens_U"),
        },
        params=pl.col("params_N"),
        tokens=pl.col("tokens_D"),
        unique_tokens=pl.col("unique_tokens_U"),
        flops=6 * pl.col("params_N") * pl.col("tokens_D"),
        flop_convention=pl.lit("6ND"),
    )
    metrics = table.select(
        _final_metric(experiment, name, "val_loss", "val", path, tokens_seen=pl.col("tokens_D"))
    )
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)


def read_sardana(path: Path) -> ReaderOutput:
    """Sardana et al.'s long-training runs (``trainingresults.csv``)."""
    warnings: list[str] = []
    numeric = {
        "Parameters": pl.Float64,
        "Tokens/Params": pl.Float64,
        "Tokens": pl.Float64,
        "Batch Size": pl.Float64,
        "Smoothed Loss": pl.Float64,
    }
    prepared = _prepare(path, numeric, warnings)
    if isinstance(prepared, ReaderOutput):
        return prepared
    table, quarantine = prepared
    experiment = "sardana"
    evals = [
        c for c in table.columns if c not in numeric and c not in ("Model Name", "source_line")
    ]
    name = pl.format("{}-{}tpp", pl.col("Model Name"), pl.col("Tokens/Params").cast(pl.Int64))
    runs = run_rows(
        table,
        experiment=experiment,
        name=name,
        source_file=path,
        assumptions=(
            f"context = {SARDANA_CONTEXT} (MPT default; not in the file); "
            "batch_size = Batch Size x context; flops = 6 * params * tokens"
        ),
        tags={
            "model_name": pl.col("Model Name"),
            "tokens_per_param": pl.col("Tokens/Params"),
            "batch_size_sequences": pl.col("Batch Size"),
            **{c: pl.col(c).cast(pl.Float64, strict=False) for c in evals},
        },
        params=pl.col("Parameters"),
        tokens=pl.col("Tokens"),
        flops=6 * pl.col("Parameters") * pl.col("Tokens"),
        flop_convention=pl.lit("6ND"),
        context=pl.lit(SARDANA_CONTEXT),
        batch_size=pl.col("Batch Size") * SARDANA_CONTEXT,
    )
    metrics = table.select(
        _final_metric(
            experiment, name, "Smoothed Loss", "train", path, tokens_seen=pl.col("Tokens")
        )
    )
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)


def read_steplaw(path: Path) -> ReaderOutput:
    """StepLaw's learning-rate / batch-size sweep (``dense_lr_bs_loss.csv``)."""
    warnings: list[str] = []
    numeric = {
        "h": pl.Int64,
        "ffnh": pl.Int64,
        "numh": pl.Int64,
        "numl": pl.Int64,
        "lr": pl.Float64,
        "bs": pl.Float64,
        "ti": pl.Float64,
        "loss": pl.Float64,
        "smooth loss": pl.Float64,
        "D": pl.Float64,
        "N": pl.Float64,
    }
    prepared = _prepare(path, numeric, warnings)
    if isinstance(prepared, ReaderOutput):
        return prepared
    table, quarantine = prepared
    experiment = "steplaw"
    # D / (bs * ti) is 2043.5..2051.8 because ti is rounded: take the nearest power of two
    ratio = pl.col("D") / (pl.col("bs") * pl.col("ti"))
    context = (pl.lit(2.0).pow(ratio.log(2).round())).cast(pl.Int64)
    table = table.with_columns(context.alias("_context"))
    name = pl.col("exp_name")
    runs = run_rows(
        table,
        experiment=experiment,
        name=name,
        source_file=path,
        assumptions=(
            "context = D / (bs * ti) rounded to a power of two (2048); "
            "batch_size = bs * context tokens; "
            "loss = the file's 'smooth loss' (raw final loss in loss_raw); "
            "flops = 6 * non_embedding_params * tokens"
        ),
        tags={
            "ffn_hidden": pl.col("ffnh"),
            "heads": pl.col("numh"),
            "batch_size_sequences": pl.col("bs"),
            "iterations": pl.col("ti"),
            "loss_raw": pl.col("loss"),
        },
        non_embedding_params=pl.col("N"),
        width=pl.col("h"),
        depth=pl.col("numl"),
        context=pl.col("_context"),
        tokens=pl.col("D"),
        flops=6 * pl.col("N") * pl.col("D"),
        flop_convention=pl.lit("6N_nonemb_D"),
        batch_size=(pl.col("bs") * pl.col("_context")).cast(pl.Float64),
        learning_rate=pl.col("lr"),
    )
    metrics = table.select(
        _final_metric(
            experiment,
            name,
            "smooth loss",
            "train",
            path,
            tokens_seen=pl.col("D"),
            learning_rate=pl.col("lr"),
        )
    )
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)


def read_tao_vocab(path: Path) -> ReaderOutput:
    """Tao et al.'s vocabulary sweep (``exp_data.csv``): 60 runs x 20 checkpoints."""
    warnings: list[str] = []
    numeric = {
        "vocab_size": pl.Float64,
        "embed_dim": pl.Float64,
        "num_characters": pl.Float64,
        "Non_vocab_parameters": pl.Float64,
        "FLOPs": pl.Float64,
        "Lossu": pl.Float64,
    }
    prepared = _prepare(path, numeric, warnings)
    if isinstance(prepared, ReaderOutput):
        return prepared
    table, quarantine = prepared
    experiment = "tao-vocab"
    name = pl.format(
        "nv{}-V{}",
        pl.col("Non_vocab_parameters").cast(pl.Int64),
        pl.col("vocab_size").cast(pl.Int64),
    )
    tokens = pl.col("num_characters") * tao_tokens_per_character(pl.col("vocab_size"))
    table = table.with_columns(
        name.alias("_name"),
        tokens.alias("_tokens"),
        (pl.col("vocab_size") * pl.col("embed_dim")).alias("_vocab_params"),
    ).with_columns(
        pl.col("num_characters").rank("ordinal").over("_name").cast(pl.Int64).alias("_checkpoint"),
        (pl.col("num_characters") == pl.col("num_characters").max().over("_name")).alias("_last"),
    )
    runs = run_rows(
        table.sort("_last", "source_line", descending=[True, False]),
        experiment=experiment,
        name=pl.col("_name"),
        source_file=path,
        assumptions=(
            "tokens = characters * f(V), f(V) = 0.00639222 ln(V)^2 - "
            "0.15811069 ln(V) + 1.20470122; run totals = last checkpoint; "
            "metrics step = checkpoint index (steps not reported)"
        ),
        tags={
            "characters": pl.col("num_characters"),
            "tokens_per_character": tao_tokens_per_character(pl.col("vocab_size")),
        },
        params=pl.col("Non_vocab_parameters") + pl.col("_vocab_params"),
        non_embedding_params=pl.col("Non_vocab_parameters"),
        vocab_params=pl.col("_vocab_params"),
        vocab_size=pl.col("vocab_size").cast(pl.Int64),
        width=pl.col("embed_dim").cast(pl.Int64),
        tokens=pl.col("_tokens"),
        flops=pl.col("FLOPs"),
        flop_convention=pl.lit("6N_nonvocab_plus_Vd_D"),
    ).unique(subset="run_id", keep="first", maintain_order=True)
    metrics = table.select(
        run_id(experiment, pl.col("_name")).alias("run_id"),
        pl.col("_checkpoint").alias("step"),
        pl.col("_tokens").alias("tokens_seen"),
        pl.lit("val").alias("split"),
        pl.lit("all").alias("domain"),
        pl.col("Lossu").alias("loss"),
        pl.lit("unigram_normalized").alias("loss_kind"),
        pl.lit(str(path)).alias("source_file"),
        "source_line",
    )
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)
