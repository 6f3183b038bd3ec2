"""CLI commands of the ingest stage: ``mixplan ingest PATH... [--lake DIR] [--format NAME]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mixplan.flows.config import DEFAULT_LAKE
from mixplan.flows.console import cli_console
from mixplan.planning.errors import MixplanError

HELP = """Read training-run logs into the validated run-log lake (Delta Lake tables).

Formats (detected from the file name and first line, or forced with --format):

* jsonl / csv / parquet / json: canonical logs with mixplan's column names (run_id, step,
  loss, ...); json is a document: an array of records or an object of arrays

* hf-trainer: Hugging Face Trainer `trainer_state.json` (log_history)

* tensorboard: TensorBoard event files `events.out.tfevents.*` (scalar loss tags)

* wandb-csv: a W&B chart's CSV export (`Step`, `<run> - <metric>` columns)

* lm-eval: lm-evaluation-harness results JSON (downstream metrics, split "downstream")

* wandb: W&B history exports (Gemstones `wandb_df_*.jsonl`)

* epoch-chinchilla, datablations, sardana, steplaw, tao-vocab: one-row-per-run tables

* regmix: RegMix mixture table (its `*_pile_loss_*` partner is read with it)

* mapping:NAME: raw dumps read through a declared mapping in `data/mappings/*.toml`
  (e.g. `mapping:mixinglaws-5mix` for the Data Mixing Laws `5Mix/*.txt` files)

Compressed logs (.gz, .zst, .bz2) are read through; byte-order marks, UTF-16/32 and legacy code
pages (Windows-1252) are handled, the decoding stated in the file's warnings.

A format not listed: declare a mapping (a TOML file, no code; see planning/mappings.py) or
name your columns as mixplan does. A file no reader recognises is reported with what was seen.

Bad records go to the lake's quarantine table with file, line, field and reason; good records
of the same file go through. Files whose content hash is unchanged since the last ingest are
skipped.
Exits non-zero only when nothing usable was read.

Examples:

* `mixplan ingest data/public` - every bundled real log, into the default lake

* `mixplan ingest runs/ --lake out/lake` - your own logs

* `mixplan ingest dump.txt --format mapping:mixinglaws-5mix --json` - forced format, JSON summary
"""


def ingest_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Log files or folders (searched recursively).")
    ],
    lake: Annotated[str, typer.Option(help="Lake folder or object-store URL.")] = str(DEFAULT_LAKE),
    format: Annotated[
        str | None,
        typer.Option("--format", help="Force a format (see above); detected per file by default."),
    ] = None,
    mappings: Annotated[
        Path | None,
        typer.Option(
            help="Folder of declared mapping TOML files, used instead of data/mappings.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Read training-run logs into the validated lake."""
    from mixplan.tasks.ingest import FileReport, SourcePlan, ingest_paths

    console = cli_console(stderr=as_json)
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
    ) as progress:
        bar = progress.add_task("discovering", total=None)

        def on_file(plan: SourcePlan, report: FileReport | None) -> None:
            if report is None:
                progress.update(bar, description=Path(plan.path).name)
            else:
                progress.advance(bar)

        try:
            report = ingest_paths(
                [str(p) for p in paths],
                lake,
                format=format,
                mappings_dir=mappings,
                on_file=on_file,
            )
        except MixplanError as err:  # a bad option (unknown --format, missing --mappings)
            progress.stop()
            console.print(f"[red]error[/red]: {err}")
            raise typer.Exit(2) from err
        progress.update(bar, total=len(report.files), description="done")
    summary = report.to_dict()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(console, summary)
    if not report.usable:
        console.print("[red]nothing usable was read[/red]")
        raise typer.Exit(code=1)


def _print_summary(console: Console, summary: dict) -> None:
    from mixplan.tasks.lake import table_uri

    files = Table(title="files", show_lines=False)
    for column in ("file", "format", "status", "runs", "rows", "quarantined"):
        files.add_column(column, justify="right" if column in ("runs", "rows") else "left")
    for report in summary["files"]:
        quarantined = ", ".join(f"{k} {v}" for k, v in report["quarantined"].items())
        files.add_row(
            Path(report["path"]).name,
            str(report["format"]),
            report["status"],
            str(report["runs"]),
            str(report["metric_rows"]),
            quarantined or "-",
        )
    console.print(files)
    for report in summary["files"]:
        for message in [report["note"], *report["warnings"]]:
            if message:
                console.print(f"[yellow]{Path(report['path']).name}[/yellow]: {message}")
    totals = summary["totals"]
    table = Table(title=f"ingest summary ({summary['lake']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("files ingested", str(totals["files_ingested"]))
    table.add_row("files rejected (nothing usable)", str(totals["files_rejected"]))
    table.add_row("files skipped (unchanged)", str(totals["files_unchanged"]))
    table.add_row("files ignored (not logs)", str(totals["files_ignored"]))
    table.add_row("runs", str(totals["runs"]))
    table.add_row("rows accepted", str(totals["metric_rows"]))
    for reason, rows in totals["quarantined"].items():
        table.add_row(f"rows quarantined: {reason}", str(rows))
    lake = summary.get("lake_summary") or {}
    if lake:
        table.add_row("lake: runs / metric rows", f"{lake['runs']} / {lake['metric_rows']}")
    console.print(table)
    if totals["quarantined_rows"]:
        console.print(
            f"Each quarantined record (file, line, field, reason, raw text) is in the lake's "
            f"quarantine table: {table_uri(summary['lake'], 'quarantine')}"
        )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``mixplan`` app."""
    app.command("ingest", help=HELP)(ingest_command)
