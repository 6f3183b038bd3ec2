"""HTTP API load test (a script, not a test): ``python bench/api.py [--requests N]``.

Starts ``mixplan api`` (uvicorn) on a free 127.0.0.1 port in a subprocess, waits until it
answers, then measures, against that real server:

(a) the baseline: one client sending plan and what-if requests one after another;
(b) the load: 10 concurrent clients sending the same mix, each a bounded loop of requests,
    while an 11th client polls ``/health``.

It prints p50/p99 latency of (a) and (b), throughput, and ``/health`` latency under load.
Goals: throughput under load >= 0.9x the single client's (concurrency does not collapse it: no
request waits on another's lock, solves use both cores), and ``/health`` p99 under load
<= 100 ms (the event loop never runs a solve, so requests do not block each other). Both sides
run with one BLAS thread (the server's environment pins it). Everything stays on loopback and
every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 10
STARTUP_SECONDS = 600.0


def _spec() -> dict:
    """The bundled example spec (seven sources, vocabulary, a mixture law)."""
    return tomllib.loads((ROOT / "data" / "specs" / "example.toml").read_text())


def _bodies() -> list[tuple[str, dict]]:
    spec = _spec()
    simple = {k: v for k, v in spec.items() if k not in ("mixture", "eval", "vocabulary")}
    return [
        ("/plan", {"spec": spec}),
        ("/plan", {"spec": simple}),
        ("/whatif", {"spec": simple, "budgets": [1e22, 1e23, 1e24], "inference_tokens": [0, 1e12]}),
    ]


def _start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mixplan", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if server.poll() is not None:
            raise SystemExit(f"mixplan api exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"mixplan api did not answer within {STARTUP_SECONDS:.0f} s")
        time.sleep(0.1)


def _client(url: str, bodies: list[tuple[str, dict]], count: int, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=600) as client:
        for i in range(count):
            path, body = bodies[i % len(bodies)]
            started = time.perf_counter()
            response = client.post(path, json=body)
            out.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")


def _health(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=600) as client:
        while not stop.is_set() and len(out) < 100_000:
            started = time.perf_counter()
            client.get("/health")
            out.append(time.perf_counter() - started)
            time.sleep(0.02)


def _ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1e3, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12, help="requests per loaded client")
    args = parser.parse_args()
    bodies = _bodies()
    server, url = _start_server()
    try:
        _client(url, bodies, len(bodies), [])  # warm-up: every worker builds its programs
        single: list[float] = []
        started = time.perf_counter()
        _client(url, bodies, args.requests * 2, single)
        single_rate = len(single) / (time.perf_counter() - started)

        loaded: list[float] = []
        health: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=_health, args=(url, stop, health))
        clients = [
            threading.Thread(target=_client, args=(url, bodies, args.requests, loaded))
            for _ in range(CLIENTS)
        ]
        started = time.perf_counter()
        poller.start()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        loaded_rate = len(loaded) / (time.perf_counter() - started)
        stop.set()
        poller.join()
    finally:
        server.terminate()
        server.wait(timeout=30)

    ratio = loaded_rate / single_rate
    print(f"mixplan api on {url}, {os.cpu_count()} cores, requests: {[p for p, _ in bodies]}")
    print(
        f"1 client:   p50 {_ms(single, 50):7.1f} ms  p99 {_ms(single, 99):7.1f} ms  "
        f"{single_rate:5.1f} req/s  ({len(single)} requests)"
    )
    print(
        f"{CLIENTS} clients: p50 {_ms(loaded, 50):7.1f} ms  p99 {_ms(loaded, 99):7.1f} ms  "
        f"{loaded_rate:5.1f} req/s  ({len(loaded)} requests)"
    )
    print(
        f"/health under load: p50 {_ms(health, 50):.1f} ms  p99 {_ms(health, 99):.1f} ms "
        f"({len(health)} polls)"
    )
    print(
        f"throughput under load / single client: {ratio:.2f}x (goal >= 0.9x) "
        f"{'OK' if ratio >= 0.9 else 'MISSED'}; /health p99 {_ms(health, 99):.0f} ms "
        f"(goal <= 100 ms) {'OK' if _ms(health, 99) <= 100 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
