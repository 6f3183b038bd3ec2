"""The canonical schema: documented column by column, and ``conform`` shapes frames exactly."""

from __future__ import annotations

import polars as pl

import mixplan.planning.schema as schema


def test_every_column_is_documented_in_the_module_docstring():
    doc = schema.__doc__
    for table in (schema.RUNS_SCHEMA, schema.METRICS_SCHEMA, schema.SOURCES_SCHEMA):
        for column in table:
            assert f"    {column} " in doc, column


def test_conform_adds_casts_orders_and_drops():
    frame = pl.DataFrame({"loss": ["2.5"], "run_id": ["a"], "extra": [1]})
    out = schema.conform(frame.with_columns(pl.col("loss").cast(pl.Float64)), schema.METRICS_SCHEMA)
    assert out.columns == list(schema.METRICS_SCHEMA)
    assert out.schema["step"] == pl.Int64
    assert out.row(0, named=True)["loss"] == 2.5


def test_conform_of_a_frame_without_columns_is_empty():
    assert schema.conform(pl.DataFrame(), schema.QUARANTINE_SCHEMA).height == 0


def test_final_rows_prefers_the_reported_final_value_then_the_last_step():
    metrics = pl.DataFrame(
        {
            "run_id": ["a", "a", "a", "b", "b", "b"],
            "split": "val",
            "domain": "all",
            "step": [100, schema.FINAL_STEP, 200, 50, 50, 10],
            "tokens_seen": [1.0, None, 2.0, 5.0, 6.0, 1.0],
            "loss": [3.0, 2.5, 2.8, 4.0, 3.9, 5.0],
        }
    )
    final = schema.final_rows(metrics).sort("run_id")
    # run a: the FINAL_STEP row wins over step 200; run b: step 50, the tie broken by tokens_seen
    assert final["loss"].to_list() == [2.5, 3.9]
    assert final.columns == metrics.columns
