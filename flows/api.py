"""A small HTTP API for dashboards: plan a spec, or a what-if grid, as JSON.

``mixplan api`` serves it on 127.0.0.1 by default. What a request can make the server do is
bounded:

* **Every input is validated before any work**, by the spec's own schema
  (:mod:`mixplan.planning.spec_schema`, the models the TOML reader uses too): each section and
  field of a spec is typed, unknown fields are refused, every number is finite and within
  bounds far beyond any real training run (``LIMITS`` there), every list has a maximum length.
  A bad input is a 422 whose ``detail`` names the field (``field 'spec.budget.flops': ...``);
  the spec then goes through :func:`mixplan.planning.spec.parse_spec`, whose errors name the
  field too. A body over :data:`MAX_BODY_BYTES` is a 413.
* **Stored fits are named, never located.** ``law.fit`` / ``mixture.fit`` must be a fit name
  (letters, digits, ``._@+-``; no ``/``, ``\\``, ``..``, NUL); it is resolved to
  ``<lake>/fits/<name>.json`` inside the server's lake, and a name with no such fit is a 422
  listing the fits that exist. Nothing outside the lake's ``fits/`` is ever read.
* **Work is bounded.** A what-if grid has at most :data:`MAX_GRID` points, and every request
  has a time budget (:data:`REQUEST_SECONDS`): a grid that runs past it stops between points
  with a 422 saying so (the request asks for too much work, like an oversized grid). At most
  :data:`MAX_PENDING` requests solve or wait at once; more get a 503 with ``Retry-After``.
* **Requests do not block each other.** Solves run in a pool of worker processes
  (:data:`WORKERS`, one per core), each with its own :class:`~mixplan.planning.plan.Planner`
  (its cvxpy programs are built once per worker and re-solved); the server process only
  validates and answers, so ``/health`` and cheap refusals stay fast while plans solve, and
  solves use every core (threads would share one, through the GIL).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from mixplan.planning.errors import MixplanError
from mixplan.planning.fitting.result import fit_path
from mixplan.planning.plan import Planner, whatif
from mixplan.planning.spec import PlanSpec, parse_spec
from mixplan.planning.spec_schema import Flops, Loss, Section, SpecModel, Tokens

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (a spec is a few kB)."""

MAX_GRID = 100
"""Most what-if points (budgets or loss targets x inference demands) per request."""

MAX_AXIS = 50
"""Most values on one what-if axis."""

REQUEST_SECONDS = 30.0
"""Time budget of one request's solves; a what-if grid past it stops with a 422."""

WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Worker processes that run solves (one per core, at most 4)."""

MAX_PENDING = 32
"""Most requests solving or waiting for a worker at once; more get a 503."""

FIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""What a stored fit's name may look like (it becomes ``<lake>/fits/<name>.json``)."""

EXAMPLE_SPEC = {
    "name": "example",
    "law": {"name": "sardana"},
    "budget": {"flops": 1e23},
    "training": {"gpu": "h100", "precision": "bf16", "mfu": 0.4, "gpus": 1024},
    "inference": {"tokens_in": 4e11, "tokens_out": 1e11},
    "limits": {"max_params": 7e10, "max_days": 60},
    "sources": [{"name": "web", "unique_tokens": 1.5e12, "max_epochs": 2}],
}
"""A small valid spec: the schema's example (and the fuzzer's starting point)."""


def is_fit_name(value: str) -> bool:
    """Whether ``value`` names a fit (no path: no ``/``, ``\\``, ``..`` or NUL)."""
    return (
        bool(FIT_NAME.fullmatch(value))
        and ".." not in value
        and not (value.removesuffix(".json").endswith("."))
    )


class PlanRequest(Section):
    """Body of POST /plan."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"spec": EXAMPLE_SPEC}]}
    )
    spec: SpecModel


class WhatIfRequest(Section):
    """Body of POST /whatif: a spec and the values to sweep (budgets or loss targets, times
    lifetime inference demands; at most ``MAX_GRID`` points)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"spec": EXAMPLE_SPEC, "budgets": [1e22, 1e23], "inference_tokens": [0, 1e12]}
            ]
        },
    )
    spec: SpecModel
    budgets: Annotated[list[Flops], Field(max_length=MAX_AXIS)] | None = None
    inference_tokens: Annotated[list[Tokens], Field(max_length=MAX_AXIS)] | None = None
    target_losses: Annotated[list[Loss], Field(max_length=MAX_AXIS)] | None = None


class RequestError(Exception):
    """A request the server refuses: its status code and a message naming the field."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers

    def __reduce__(self):  # raised in a worker process, re-raised in the server
        return RequestError, (self.status, self.detail, self.headers)


class BodyLimit:
    """ASGI middleware: 413 when a body exceeds ``limit`` bytes (declared or streamed)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(self.limit, scope, receive, send)
        # Buffer the body (at most ``limit`` bytes) before the app sees it, then replay it.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await _too_large(self.limit, scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _too_large(limit, scope, receive, send):
    response = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
    await response(scope, receive, send)


def _field_errors(exc: RequestValidationError) -> str:
    """One sentence per invalid field: ``field 'spec.budget.flops': <what is wrong>``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        lines.append(f"field '{where or 'body'}': {error.get('msg', 'invalid')}")
    return "; ".join(lines)


T = TypeVar("T")


_PLANNER: Planner | None = None
"""This worker process's planner (built on its first solve)."""


PARENT_POLL_SECONDS = 1.0
"""How often a worker checks that the server that started it is still alive."""


def _exit_with(server_pid: int) -> None:
    """End this worker once the server process is gone: a server killed with SIGKILL (or the
    OOM killer) cannot stop its pool, and the orphans would sit on their memory forever."""
    while os.getppid() == server_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


def _worker_start(lake: str | None, server_pid: int) -> None:
    """Pin each worker to one BLAS thread (the pool already has one worker per core), give
    its fsspec the lake's storage options (the planner reads stored fits through fsspec), and
    tie its life to the server's."""
    from threadpoolctl import threadpool_limits

    threading.Thread(target=_exit_with, args=(server_pid,), daemon=True).start()
    threadpool_limits(1)
    if lake is not None:
        from mixplan.tasks.storage import filesystem, is_local

        if not is_local(lake):
            filesystem(lake)


def _planner() -> Planner:
    global _PLANNER
    if _PLANNER is None:
        _PLANNER = Planner()
    return _PLANNER


def solve_plan(spec: PlanSpec) -> dict[str, Any]:
    """Plan one validated spec (runs in a worker process)."""
    try:
        return _planner().plan(spec).to_dict()
    except MixplanError as exc:
        raise RequestError(422, str(exc)) from None


def solve_whatif(
    spec: PlanSpec,
    axis: str,
    first: list[float | None],
    tokens: list[float | None],
    budget_seconds: float,
) -> list[dict[str, Any]]:
    """Re-plan ``spec`` at every point of ``first`` (budgets or loss targets, by ``axis``) x
    ``tokens`` (runs in a worker process); stops with a 422 once ``budget_seconds`` have passed
    (checked between points, after the first)."""
    started = time.monotonic()
    total = len(first) * len(tokens)
    plans: list[dict[str, Any]] = []
    for value in first:
        for t_inf in tokens:
            if plans and time.monotonic() - started > budget_seconds:
                raise RequestError(
                    422,
                    f"the what-if grid ran past this server's {budget_seconds:.0f} s budget per "
                    f"request after {len(plans)} of {total} points; ask for fewer points",
                )
            try:
                (point,) = whatif(
                    spec,
                    **({axis: [value]} if value is not None else {}),
                    inference_tokens=None if t_inf is None else [t_inf],
                    planner=_planner(),
                )
            except MixplanError as exc:
                raise RequestError(422, str(exc)) from None
            plans.append(point.to_dict())
    return plans


class Solver:
    """The pool of worker processes that run solves, and the cap on requests in flight.

    The pool starts on the first solve and lives as long as the server process (the workers
    exit with it); :meth:`close` stops it earlier, and a later solve starts a new one.
    """

    def __init__(
        self, workers: int = WORKERS, pending: int = MAX_PENDING, lake: str | None = None
    ) -> None:
        self.workers, self.pending, self.lake = workers, pending, lake
        self.pool: ProcessPoolExecutor | None = None
        self.active = 0
        self.counter = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self.counter:
            if self.pool is None:
                self.pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),  # never fork a server
                    initializer=_worker_start,
                    initargs=(self.lake, os.getpid()),
                )
            return self.pool

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(*args)`` on a worker; 503 when too many requests are already in flight."""
        with self.counter:
            if self.active >= self.pending:
                raise RequestError(
                    503,
                    f"the server is busy ({self.active} requests solving or waiting); retry "
                    "in a few seconds",
                    {"Retry-After": "2"},
                )
            self.active += 1
        try:
            return await asyncio.wrap_future(self._pool().submit(work, *args))
        finally:
            with self.counter:
                self.active -= 1

    def close(self) -> None:
        """Stop the workers (pending solves are cancelled)."""
        with self.counter:
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def create_app(
    *,
    lake: str | Path | None = None,
    workers: int = WORKERS,
    request_seconds: float = REQUEST_SECONDS,
) -> FastAPI:
    """The FastAPI app; ``lake`` is where the stored fits that specs name are read."""
    lake_str = str(lake) if lake is not None else None
    solver = Solver(workers, lake=lake_str)

    app = FastAPI(title="mixplan", description="compute-optimal LLM pretraining plans")

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc, msg and type only: echoing the input back could hold NaN, which is not JSON
        errors = [
            {"loc": list(error.get("loc", ())), "msg": error.get("msg"), "type": error.get("type")}
            for error in exc.errors()
        ]
        return JSONResponse(
            {"detail": _field_errors(exc), "errors": jsonable_encoder(errors)}, status_code=422
        )

    @app.exception_handler(RequestError)
    async def refused(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    def stored_fit(section: str, name: str, key: str = "fit", suffix: str = "") -> str:
        """The location of the stored fit ``name`` (with ``suffix``: the experiment's
        leaderboard) inside the lake (422 when there is none)."""
        field = f"spec.{section}.{key}"
        if not is_fit_name(name):
            raise RequestError(
                422,
                f"field '{field}': name a stored fit in the server's lake (letters, digits and "
                "._@+-, e.g. 'epoch-chinchilla'), not a path",
            )
        if lake_str is None:
            raise RequestError(
                422, f"field '{field}': this server has no lake (start it with --lake DIR)"
            )
        from mixplan.tasks.storage import exists, filesystem, is_local, join, local_path

        stem = name.removesuffix(".json")
        location = fit_path(lake_str, stem + suffix)
        if exists(location):
            return location
        folder = join(lake_str, "fits")
        pattern = f"*{suffix}.json"
        if is_local(folder):
            names = sorted(p.stem for p in local_path(folder).glob(pattern))
        else:
            fs, path = filesystem(folder)
            names = sorted(Path(p).stem for p in fs.glob(f"{path}/{pattern}"))
        listed = ", ".join(n.removesuffix(suffix) for n in names[:20]) or "none"
        what, there = ("law leaderboard for", "leaderboards") if suffix else ("stored fit", "fits")
        raise RequestError(
            422, f"field '{field}': no {what} {stem!r} in the lake; {there} there: {listed}"
        )

    def parse(model: SpecModel):
        spec = model.model_dump(exclude_none=True)
        for section in ("law", "mixture"):
            table = spec.get(section)
            if table and table.get("fit"):
                table["fit"] = stored_fit(section, table["fit"])
        law = spec.get("law") or {}
        if law.get("experiment"):
            law["experiment"] = stored_fit("law", law["experiment"], "experiment", "-leaderboard")
        downstream = (spec.get("budget") or {}).get("target_downstream")
        if downstream:
            downstream["fit"] = stored_fit("budget.target_downstream", downstream["fit"])
        try:
            return parse_spec(spec, origin="<request>")
        except MixplanError as exc:
            raise RequestError(422, str(exc).replace("<request>: field '", "field 'spec.")) from exc

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok"}

    @app.post("/plan")
    async def plan(request: PlanRequest) -> dict[str, Any]:
        """Plan one spec."""
        spec = await anyio.to_thread.run_sync(parse, request.spec)  # may read the lake
        return await solver.run(solve_plan, spec)

    @app.post("/whatif")
    async def what_if(request: WhatIfRequest) -> dict[str, Any]:
        """Re-plan a spec over budgets (or loss targets) x inference demand."""
        first = request.target_losses or request.budgets or [None]
        tokens = request.inference_tokens or [None]
        axis = "target_losses" if request.target_losses else "budgets"
        if len(first) * len(tokens) > MAX_GRID:
            raise RequestError(
                422,
                f"field '{axis}' x 'inference_tokens': the what-if grid has "
                f"{len(first) * len(tokens)} points, over this server's limit of {MAX_GRID}",
            )
        spec = await anyio.to_thread.run_sync(parse, request.spec)  # may read the lake
        plans = await solver.run(solve_whatif, spec, axis, first, tokens, request_seconds)
        return {"plans": plans}

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


def serve(*, host: str = "127.0.0.1", port: int = 8000, lake: str | None = None) -> None:
    """Run the API with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(lake=lake), host=host, port=port, log_level="info")
