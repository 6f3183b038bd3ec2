"""Declared mappings: turn raw evaluation dumps whose paths encode run facts into runs + metrics.

A mapping is a TOML file (``data/mappings/*.toml``) that says, for a family of delimited text
files, which columns the file has, which regular expression (with named groups) pulls facts out
of which column, and how those facts become schema fields. The code below is generic: nothing in
it knows about any one data set.

Format::

    name = "mixinglaws-5mix"                  # selects it: --format mapping:mixinglaws-5mix
    description = "..."
    files = ["*/5Mix/*.txt"]                  # globs on the file's posix path (detection)
    exclude = ["*/5Mix/proportions.txt"]      # matched files that are not logs
    separator = "\\t"
    columns = ["checkpoint", "eval_file", "loss"]
    experiment = "mixinglaws-5mix"
    run_name = "{size}_{mix_id}-{mixture}"    # template over capture groups / columns

    [patterns]                                # column -> regex with named groups
    checkpoint = '(?P<size>\\d+[MB])_(?P<mix_id>\\d+)-(?P<mixture>[0-9.-]+)/(?P<step>\\d+)/*$'

    [run]                                     # RUNS_SCHEMA field -> spec
    non_embedding_params = { from = "size", lookup = { "70M" = 18915328 } }
    mixture = { from = "mixture", split = "-", sources = ["a", "b"] }

    [metric]                                  # METRICS_SCHEMA field -> spec
    step = { from = "step", type = "int" }
    tokens_seen = { from = "step", type = "float", scale = 1048576 }
    split = { value = "val" }

    [tags]                                    # tag name -> capture group / column, or a spec
    mix_id = "mix_id"

A spec takes its value ``from`` a capture group or column, or is a literal ``value``; then
optionally ``lookup`` (a table; unknown keys give null and a warning), ``type``
(``int``/``float``/``str``) and ``scale`` (a multiplier). A ``mixture`` spec splits the text on
``split`` and pairs the numbers with ``sources`` in the order given. Records whose columns do
not match their pattern are quarantined (``unmatched_path``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import polars as pl

from mixplan.data import MAPPINGS_DIR
from mixplan.planning.errors import RunLogError
from mixplan.planning.schema import METRICS_SCHEMA, MIXTURE_DTYPE, RUNS_SCHEMA

DEFAULT_MAPPINGS_DIR = MAPPINGS_DIR
"""Where mixplan's own declared mappings live (package data: present in a wheel install too)."""

_TYPES: dict[str, pl.DataType] = {"int": pl.Int64, "float": pl.Float64, "str": pl.String}


@dataclass(frozen=True)
class Mapping:
    """A declared mapping (see the module docstring for the TOML format)."""

    name: str
    files: tuple[str, ...]
    columns: tuple[str, ...]
    experiment: str
    run_name: str
    separator: str = "\t"
    has_header: bool = False
    description: str = ""
    exclude: tuple[str, ...] = ()
    patterns: dict[str, str] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    origin: str = ""

    def matches(self, path: Path) -> bool:
        """Whether the mapping claims ``path`` (including excluded files)."""
        text = Path(path).as_posix()
        return any(fnmatch(text, glob) for glob in self.files + self.exclude)

    def excludes(self, path: Path) -> bool:
        """Whether ``path`` is one of the mapping's non-log files."""
        text = Path(path).as_posix()
        return any(fnmatch(text, glob) for glob in self.exclude)


def load_mapping(path: str | Path) -> Mapping:
    """Load and check one mapping TOML file.

    Raises
    ------
    RunLogError
        When the file is not valid TOML or a key is missing or wrong (the message names it).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RunLogError(f"{path}: cannot read mapping: {error}") from error
    for key in ("name", "files", "columns", "experiment", "run_name"):
        if key not in data:
            raise RunLogError(f"{path}: mapping lacks required key {key!r}")
    for section, schema in (("run", RUNS_SCHEMA), ("metric", METRICS_SCHEMA)):
        for name in data.get(section, {}):
            if name not in schema:
                raise RunLogError(
                    f"{path}: [{section}] field {name!r} is not a schema column; "
                    f"allowed: {', '.join(schema)}"
                )
    for column, pattern in data.get("patterns", {}).items():
        if column not in data["columns"]:
            raise RunLogError(f"{path}: [patterns] names unknown column {column!r}")
        try:
            re.compile(pattern)
        except re.error as error:
            raise RunLogError(f"{path}: [patterns] {column}: bad regex: {error}") from error
    return Mapping(
        name=data["name"],
        files=tuple(data["files"]),
        columns=tuple(data["columns"]),
        experiment=data["experiment"],
        run_name=data["run_name"],
        separator=data.get("separator", "\t"),
        has_header=bool(data.get("has_header", False)),
        description=data.get("description", ""),
        exclude=tuple(data.get("exclude", ())),
        patterns=dict(data.get("patterns", {})),
        run=dict(data.get("run", {})),
        metric=dict(data.get("metric", {})),
        tags=dict(data.get("tags", {})),
        origin=str(path),
    )


def load_mappings(directory: str | Path | None = None) -> list[Mapping]:
    """Every ``*.toml`` mapping in ``directory`` (default: mixplan's ``data/mappings``).

    Raises
    ------
    RunLogError
        When the folder is not there: one that was asked for, or mixplan's own (package data;
        missing only from a broken install, which must not silently read no mappings).
    """
    directory = Path(DEFAULT_MAPPINGS_DIR if directory is None else directory)
    if not directory.is_dir():
        raise RunLogError(
            f"mappings folder {directory} does not exist; pass a folder of *.toml mappings "
            f"(mixplan's own are in {DEFAULT_MAPPINGS_DIR})"
        )
    return [load_mapping(p) for p in sorted(directory.glob("*.toml"))]


def find_mapping(path: Path, mappings: list[Mapping]) -> Mapping | None:
    """The first mapping whose globs match ``path``."""
    for mapping in mappings:
        if mapping.matches(Path(path).resolve()) or mapping.matches(Path(path)):
            return mapping
    return None


def _spec_expr(spec: Any, available: set[str], where: str) -> pl.Expr:
    if isinstance(spec, str):
        spec = {"from": spec}
    if not isinstance(spec, dict):
        return pl.lit(spec)
    if "value" in spec:
        expr = pl.lit(spec["value"])
    else:
        source = spec.get("from")
        if source not in available:
            raise RunLogError(
                f"mapping {where}: 'from = {source!r}' is neither a column nor a capture group"
            )
        expr = pl.col(source)
    if "lookup" in spec:
        table = spec["lookup"]
        expr = expr.cast(pl.String).replace_strict(list(table), list(table.values()), default=None)
    if "type" in spec:
        expr = expr.cast(_TYPES[spec["type"]], strict=False)
    if "scale" in spec:
        expr = expr.cast(pl.Float64, strict=False) * float(spec["scale"])
    return expr


def _mixture_expr(spec: dict[str, Any], available: set[str], where: str) -> pl.Expr:
    source = spec.get("from")
    if source not in available:
        raise RunLogError(f"mapping {where}: mixture 'from = {source!r}' is not available")
    sources = list(spec["sources"])
    parts = pl.col(source).str.split(spec.get("split", "-"))
    items = [
        pl.struct(
            pl.lit(name).alias("source"),
            parts.list.get(i, null_on_oob=True).cast(pl.Float64, strict=False).alias("weight"),
            pl.lit(None, pl.Float64).alias("unique_tokens"),
        )
        for i, name in enumerate(sources)
    ]
    return pl.concat_list(items).cast(MIXTURE_DTYPE)


def _template_expr(template: str, available: set[str]) -> pl.Expr:
    names = re.findall(r"{(\w+)}", template)
    for name in names:
        if name not in available:
            raise RunLogError(f"run_name template names unknown field {name!r}")
    pieces = re.split(r"{\w+}", template)
    parts: list[pl.Expr] = []
    for i, piece in enumerate(pieces):
        if piece:
            parts.append(pl.lit(piece))
        if i < len(names):
            parts.append(pl.col(names[i]).cast(pl.String))
    return pl.concat_str(parts)


def read_mapped(path: Path, mapping: Mapping):
    """Read ``path`` through a declared ``mapping``: a ``ReaderOutput`` of runs and metrics."""
    from mixplan.planning.readers.base import ReaderOutput, read_text_table, single
    from mixplan.planning.validation import coerce_numeric, split_by_checks

    warnings: list[str] = []
    table = read_text_table(
        path,
        separator=mapping.separator,
        has_header=mapping.has_header,
        columns=list(mapping.columns),
        warnings=warnings,
    )
    if isinstance(table, ReaderOutput):
        return table
    source_file = str(path)
    table = table.with_columns(
        pl.concat_str([pl.col(c).fill_null("") for c in mapping.columns], separator="\t").alias(
            "_record"
        )
    )
    checks = []
    available = set(mapping.columns)
    for column, pattern in mapping.patterns.items():
        groups = re.compile(pattern).groupindex
        table = table.with_columns(
            pl.col(column).str.extract_groups(pattern).alias(f"_{column}_groups")
        ).unnest(f"_{column}_groups")
        first = next(iter(groups))
        checks.append((pl.col(first).is_null(), column, "unmatched_path"))
        available |= set(groups)
    table, quarantine = split_by_checks(table, checks, source_file=source_file)
    where = f"{mapping.name} ({mapping.origin})"
    name = _template_expr(mapping.run_name, available)
    run_id = pl.concat_str(pl.lit(mapping.experiment + "/"), name)

    metric_exprs = {}
    for field_name, spec in mapping.metric.items():
        metric_exprs[field_name] = _spec_expr(spec, available, f"{where} [metric] {field_name}")
    numeric = {f: METRICS_SCHEMA[f] for f in metric_exprs if METRICS_SCHEMA[f].is_numeric()}
    table = table.with_columns(run_id.alias("run_id"))
    table = table.with_columns(
        **{f"_m_{f}": expr.cast(pl.String) for f, expr in metric_exprs.items()}
    )
    table, q_numeric = coerce_numeric(
        table, {f"_m_{f}": dtype for f, dtype in numeric.items()}, source_file=source_file
    )
    q_numeric = q_numeric.with_columns(pl.col("field").str.strip_prefix("_m_"))
    metrics = table.select(
        "run_id",
        *[pl.col(f"_m_{f}").alias(f) for f in metric_exprs],
        pl.lit(source_file).alias("source_file"),
        "source_line",
        "_record",
    )

    run_exprs = [run_id.alias("run_id"), pl.lit(mapping.experiment).alias("experiment")]
    for field_name, spec in mapping.run.items():
        if field_name == "mixture":
            expr = _mixture_expr(spec, available, f"{where} [run] mixture")
        else:
            expr = _spec_expr(spec, available, f"{where} [run] {field_name}")
            expr = expr.cast(RUNS_SCHEMA[field_name], strict=False)
        run_exprs.append(expr.alias(field_name))
    tag_exprs = {
        tag: _spec_expr(spec, available, f"{where} [tags] {tag}")
        for tag, spec in mapping.tags.items()
    }
    tag_exprs["mapping"] = pl.lit(mapping.name)
    run_exprs.append(pl.struct(**tag_exprs).struct.json_encode().alias("tags"))
    runs = (
        table.select(*run_exprs, pl.lit(source_file).alias("source_file"), "source_line")
        .sort("source_line")
        .unique(subset="run_id", keep="first", maintain_order=True)
    )
    return ReaderOutput(
        chunks=single(runs, metrics, pl.concat([quarantine, q_numeric])), warnings=warnings
    )
