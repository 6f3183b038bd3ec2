"""The HTTP API: plan and what-if through FastAPI's TestClient, limits, and one real server."""

from __future__ import annotations

import copy
import socket
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mixplan.flows.api import MAX_BODY_BYTES, create_app

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


@pytest.fixture(scope="module")
def spec() -> dict:
    data = tomllib.loads((SPECS / "example.toml").read_text())
    for key in ("mixture", "eval", "vocabulary"):
        data.pop(key)
    return data


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


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
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        response = httpx.post(
            f"http://127.0.0.1:{port}/whatif",
            json={"spec": spec, "budgets": [1e23], "inference_tokens": [0]},
            timeout=30,
        )
        assert response.status_code == 200
        assert response.json()["plans"][0]["status"] == "optimal"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
