"""A small HTTP API for dashboards: plan a spec, or a what-if grid, as JSON.

``mixplan api`` serves it on 127.0.0.1 by default. Bodies are pydantic-validated, capped in
size (``MAX_BODY_BYTES``), and a spec may name stored fits only by name inside the server's
lake (never a path), so a request cannot make the server read arbitrary files. The built
convex programs are shared by all requests behind a lock (cvxpy parameters are mutable).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mixplan.planning.errors import MixplanError, SpecError
from mixplan.planning.plan import Planner, whatif
from mixplan.planning.spec import parse_spec

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (a spec is a few kB)."""

MAX_GRID = 400
"""Largest what-if grid (budgets x inference demands) per request."""


class PlanRequest(BaseModel):
    """Body of POST /plan: the spec as the TOML structure (a JSON object)."""

    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]


class WhatIfRequest(BaseModel):
    """Body of POST /whatif: a spec and the values to sweep."""

    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]
    budgets: list[float] | None = Field(default=None, max_length=100)
    inference_tokens: list[float] | None = Field(default=None, max_length=100)
    target_losses: list[float] | None = Field(default=None, max_length=100)


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


def _no_paths(spec: dict[str, Any]) -> None:
    for section in ("law", "mixture"):
        table = spec.get(section)
        fit = table.get("fit") if isinstance(table, dict) else None
        if isinstance(fit, str) and ("/" in fit or "\\" in fit or ".." in fit or ":" in fit):
            raise HTTPException(
                422, f"field '{section}.fit': name a stored fit in the server's lake, not a path"
            )


def create_app(*, lake: str | Path | None = None) -> FastAPI:
    """The FastAPI app; ``lake`` is where stored fits named by specs are read."""
    app = FastAPI(title="mixplan", description="compute-optimal LLM pretraining plans")
    planner = Planner()
    lock = threading.Lock()
    lake_str = str(lake) if lake is not None else None

    def _parse(spec: dict[str, Any]):
        _no_paths(spec)
        try:
            return parse_spec(spec, origin="<request>")
        except SpecError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok"}

    @app.post("/plan")
    def plan(request: PlanRequest) -> dict[str, Any]:
        """Plan one spec."""
        spec = _parse(request.spec)
        try:
            with lock:
                return planner.plan(spec, lake=lake_str).to_dict()
        except MixplanError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.post("/whatif")
    def what_if(request: WhatIfRequest) -> dict[str, Any]:
        """Re-plan a spec over budgets (or loss targets) x inference demand."""
        spec = _parse(request.spec)
        first = request.target_losses or request.budgets or [None]
        if len(first) * len(request.inference_tokens or [None]) > MAX_GRID:
            raise HTTPException(422, f"what-if grid over {MAX_GRID} points")
        try:
            with lock:
                plans = whatif(
                    spec,
                    budgets=request.budgets,
                    inference_tokens=request.inference_tokens,
                    target_losses=request.target_losses,
                    lake=lake_str,
                    planner=planner,
                )
        except MixplanError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"plans": [p.to_dict() for p in plans]}

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


def serve(*, host: str = "127.0.0.1", port: int = 8000, lake: str | None = None) -> None:
    """Run the API with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(lake=lake), host=host, port=port, log_level="info")
