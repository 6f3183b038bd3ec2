"""The HTTP API: plan and what-if through FastAPI's TestClient, input bounds, stored fits by
name inside the lake, request limits, concurrency, a schema fuzz, and one real server."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mixplan.flows.api import MAX_BODY_BYTES, MAX_GRID, create_app
from mixplan.planning.errors import SpecError
from mixplan.planning.spec import parse_spec

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"
EPOCH = "epoch-research__analyzing-chinchilla"


@pytest.fixture(scope="module")
def spec() -> dict:
    data = tomllib.loads((SPECS / "example.toml").read_text())
    for key in ("mixture", "eval", "vocabulary"):
        data.pop(key)
    return data


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


@pytest.fixture(scope="module")
def fitted_lake(tmp_path_factory, bundled) -> Path:
    """A real lake holding one stored fit (Epoch's runs, a few bootstrap draws)."""
    from mixplan.tasks.fit import fit_lake
    from mixplan.tasks.ingest import ingest_paths

    lake = tmp_path_factory.mktemp("api") / "lake"
    ingest_paths([bundled / EPOCH], lake)
    fit_lake(lake, n_bootstrap=4)
    assert (lake / "fits" / "epoch-chinchilla.json").exists()
    return lake


@pytest.fixture(scope="module")
def lake_client(fitted_lake) -> TestClient:
    return TestClient(create_app(lake=fitted_lake))


def test_plan_endpoint(client, spec):
    response = client.post("/plan", json={"spec": spec})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "optimal" and body["params"] > 0
    assert body["explanation"]["binding"]


def test_whatif_endpoint_answers_a_grid(client, spec):
    response = client.post(
        "/whatif", json={"spec": spec, "budgets": [1e22, 1e24], "inference_tokens": [0, 1e12]}
    )
    assert response.status_code == 200
    plans = response.json()["plans"]
    assert len(plans) == 4
    assert plans[0]["params"] < plans[2]["params"]  # 1e22 vs 1e24 at T_inf = 0
    assert plans[1]["params"] < plans[0]["params"]  # inference demand shrinks the model


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("limits", "max_tokens_per_param", 1e7),
        ("training", "mfu", 1.5),
        ("inference", "tokens_out", -1.0),
        ("limits", "max_memory", 3),
        ("uncertainty", "robust", "yes"),
    ],
)
def test_a_spec_file_and_the_api_refuse_the_same_fields(client, spec, section, key, value):
    """One schema (planning/spec_schema.py) behind both readers: what a TOML spec may not
    say, a request may not either, and both name the same field."""
    bad = copy.deepcopy(spec)
    bad.setdefault(section, {})[key] = value
    with pytest.raises(SpecError, match=rf"field '{section}\.{key}'"):
        parse_spec(bad)
    response = client.post("/plan", json={"spec": bad})
    assert response.status_code == 422
    assert f"spec.{section}.{key}" in response.json()["detail"]


def test_invalid_bodies_are_422_naming_the_field(client, spec):
    bad = copy.deepcopy(spec)
    bad["budget"] = {"flops": -1}
    response = client.post("/plan", json={"spec": bad})
    assert response.status_code == 422 and "budget.flops" in response.json()["detail"]
    assert client.post("/plan", json={"spec": spec, "extra": 1}).status_code == 422
    assert client.post("/whatif", json={"spec": spec, "budgets": ["many"]}).status_code == 422
    path_fit = {**spec, "law": {"fit": "../../etc/secret.json"}}
    response = client.post("/plan", json={"spec": path_fit})
    assert response.status_code == 422 and "not a path" in response.json()["detail"]
    response = client.post("/whatif", json={"spec": spec, "budgets": [1e22] * 101})
    assert response.status_code == 422


def _with(spec: dict, section: str, **fields) -> dict:
    changed = copy.deepcopy(spec)
    changed[section] = {**changed.get(section, {}), **fields}
    return changed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"budget": {"flops": 10**400}}, "spec.budget.flops"),
        ({"budget": {"flops": 1e40}}, "spec.budget.flops"),
        ({"limits": {"max_params": -1}}, "spec.limits.max_params"),
        ({"training": {"mfu": 1.5}}, "spec.training.mfu"),
        ({"training": {"gpus": 0}}, "spec.training.gpus"),
        ({"inference": {"tokens_in": -5}}, "spec.inference.tokens_in"),
        ({"sources": [{"name": "web", "unique_tokens": 0}]}, "spec.sources.0.unique_tokens"),
        ({"law": {"name": "sardana", "alpha": 99}}, "spec.law.alpha"),
        ({"budget": {"flops": 1e23, "bogus": 1}}, "spec.budget.bogus"),
    ],
)
def test_every_bad_number_is_a_422_naming_its_field(client, spec, body, field):
    bad = copy.deepcopy(spec)
    for section, value in body.items():
        bad[section] = value
    response = client.post("/plan", json={"spec": bad})
    assert response.status_code == 422, response.text
    assert f"field '{field}'" in response.json()["detail"]


def test_non_finite_and_non_positive_what_if_values_are_422s(client, spec):
    for budgets, field in (
        ("[NaN]", "budgets.0"),
        ("[-1]", "budgets.0"),
        ("[0]", "budgets.0"),
        ("[1e22, Infinity]", "budgets.1"),
    ):
        body = f'{{"spec": {json.dumps(spec)}, "budgets": {budgets}}}'
        response = client.post(
            "/whatif", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (budgets, response.text)
        assert f"field '{field}'" in response.json()["detail"]
    response = client.post("/whatif", json={"spec": spec, "inference_tokens": [-1.0]})
    assert response.status_code == 422 and "inference_tokens.0" in response.json()["detail"]


def test_a_grid_over_the_limit_is_refused_before_any_solve(client, spec):
    budgets = [1e21 * 1.1**i for i in range(20)]
    response = client.post(
        "/whatif", json={"spec": spec, "budgets": budgets, "inference_tokens": [0.0] * 20}
    )
    assert response.status_code == 422
    assert f"400 points, over this server's limit of {MAX_GRID}" in response.json()["detail"]


def test_a_grid_past_the_time_budget_stops_with_a_message(spec):
    tight = TestClient(create_app(request_seconds=0.0))
    response = tight.post("/whatif", json={"spec": spec, "budgets": [1e22, 1e23]})
    assert response.status_code == 422
    assert "budget per request after 1 of 2 points" in response.json()["detail"]


def test_stored_fits_are_named_and_resolved_inside_the_lake(
    lake_client, client, fitted_lake, spec, tmp_path, monkeypatch
):
    # a valid fit file in the server's working directory: planning with it would answer 200
    (tmp_path / "stolen.json").write_text(
        (fitted_lake / "fits" / "epoch-chinchilla.json").read_text()
    )
    monkeypatch.chdir(tmp_path)
    sources = [{"name": "web", "unique_tokens": 1e12}]
    for section, extra in (("law", {}), ("mixture", {"sources": sources})):
        body = {**spec, **extra, section: {"fit": "stolen.json"}}
        response = lake_client.post("/plan", json={"spec": body})
        assert response.status_code == 422, response.text
        assert (
            f"field 'spec.{section}.fit': no stored fit 'stolen' in the lake; "
            "fits there: epoch-chinchilla"
        ) in response.json()["detail"]
    for name in ("a/b", "..", "x\x00y", "/etc/passwd", "fits/../x", "C:\\x", "", "x" * 200):
        response = lake_client.post("/plan", json={"spec": {**spec, "law": {"fit": name}}})
        assert response.status_code == 422, (name, response.text)
        assert "field 'spec.law.fit'" in response.json()["detail"]
    response = client.post("/plan", json={"spec": {**spec, "law": {"fit": "epoch-chinchilla"}}})
    assert response.status_code == 422 and "has no lake" in response.json()["detail"]
    for name in ("epoch-chinchilla", "epoch-chinchilla.json"):
        response = lake_client.post("/plan", json={"spec": {**spec, "law": {"fit": name}}})
        assert response.status_code == 200, response.text
        assert "stored fit 'epoch-chinchilla'" in response.json()["law"]["description"]


def test_a_law_by_experiment_plans_with_its_leaderboard_winner(lake_client, spec):
    body = {**spec, "law": {"experiment": "epoch-chinchilla"}}
    response = lake_client.post("/plan", json={"spec": body})
    assert response.status_code == 200, response.text
    selection = response.json()["law"]["selection"]
    assert selection["reason"] == "leaderboard winner" and selection["rank"] == 1
    assert selection["fit"] == "epoch-chinchilla" and selection["experiment"] == "epoch-chinchilla"
    response = lake_client.post("/plan", json={"spec": {**spec, "law": {"experiment": "gone"}}})
    assert response.status_code == 422
    assert (
        "field 'spec.law.experiment': no law leaderboard for 'gone' in the lake; "
        "leaderboards there: epoch-chinchilla"
    ) in response.json()["detail"]
    for name in ("a/b", "..", "x\x00y", "/etc/passwd", "fits/../x", "", "x" * 200):
        response = lake_client.post("/plan", json={"spec": {**spec, "law": {"experiment": name}}})
        assert response.status_code == 422, (name, response.text)
        assert "field 'spec.law.experiment'" in response.json()["detail"]


def test_a_downstream_target_names_a_fit_inside_the_lake(lake_client, spec):
    budget = {"target_downstream": {"fit": "gone", "error": 0.5}}
    response = lake_client.post("/plan", json={"spec": {**spec, "budget": budget}})
    assert response.status_code == 422
    assert (
        "field 'spec.budget.target_downstream.fit': no stored fit 'gone' in the lake"
        in response.json()["detail"]
    )
    for name in ("../x", "/etc/passwd", "a/b"):
        budget = {"target_downstream": {"fit": name, "error": 0.5}}
        response = lake_client.post("/plan", json={"spec": {**spec, "budget": budget}})
        assert response.status_code == 422 and "target_downstream" in response.json()["detail"]


def test_request_size_limit(client, spec):
    padding = "x" * (MAX_BODY_BYTES + 10)
    response = client.post(
        "/plan",
        content=f'{{"spec": {{"name": "{padding}"}}}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413

    def chunks():
        yield b'{"spec": {"name": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}}'

    response = client.post("/plan", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_server_on_loopback(spec):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 600  # a ceiling for a loaded machine, not a timing claim
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        response = httpx.post(
            f"http://127.0.0.1:{port}/whatif",
            json={"spec": spec, "budgets": [1e23], "inference_tokens": [0]},
            timeout=600,
        )
        assert response.status_code == 200
        assert response.json()["plans"][0]["status"] == "optimal"
    finally:
        server.should_exit = True
        thread.join(timeout=600)
    assert not thread.is_alive()


def test_requests_over_the_in_flight_cap_get_a_503_with_retry_after():
    import asyncio

    from mixplan.flows.api import RequestError, Solver

    solver = Solver(workers=1, pending=0)
    try:
        with pytest.raises(RequestError) as refused:
            asyncio.run(solver.run(len, "never runs"))
    finally:
        solver.close()
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "2"}
    assert "the server is busy" in refused.value.detail


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_end_when_the_server_is_killed(spec, tmp_path):
    """`mixplan api` killed with SIGKILL cannot stop its worker pool: the workers notice their
    server is gone and exit instead of lingering as orphans."""
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    server = subprocess.Popen(
        [sys.executable, "-m", "mixplan", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        response = None
        deadline = time.monotonic() + 600  # a ceiling for a loaded machine, not a timing claim
        while response is None and time.monotonic() < deadline and server.poll() is None:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/whatif",
                    json={"spec": spec, "budgets": [1e23], "inference_tokens": [0]},
                    timeout=600,
                )
            except httpx.TransportError:
                time.sleep(0.2)
        assert response is not None and response.status_code == 200
        workers = _children(server.pid)
        assert workers, "the solve ran in no worker process"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    deadline = time.monotonic() + 600
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_running, workers)), f"workers {workers} outlived their server"
