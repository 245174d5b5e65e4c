"""Bounded load test of `flexguard serve` on loopback (stops by itself), and how it stands abuse.

    python benchmarks/bench_server.py [--requests 5000] [--concurrency 32]

Starts the server with the embedded model in a subprocess on 127.0.0.1, sends N
/v1/moderations requests (one prompt each) with C in flight, and compares throughput with
scoring the same prompts in-process. Then the abuse figures: the reply time to a body that
announces 300 MB and to one of a million one-word items; /healthz latency and the latency
of one-item requests while eight 256-item requests are being scored; how many of a burst of
big requests are shed with 429; and the size of /metrics after 2,000 requests to random paths.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd

from _common import DATA, table, write_result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, prompts: list[str], concurrency: int, deadline_s: float) -> tuple[list[float], int, float]:
    latencies, errors = [], 0
    queue = list(enumerate(prompts))
    stop_at = time.perf_counter() + deadline_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue and time.perf_counter() < stop_at:
            _, text = queue.pop()
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/moderations", json={"input": text})
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--deadline", type=float, default=600, help="seconds; the test stops by itself")
    args = ap.parse_args()
    d = pd.read_csv(DATA / "distill" / "Guard_prompt_train.csv")
    prompts = d.prompt[d.prompt.str.len() < 400].tolist()
    prompts = (prompts * (args.requests // len(prompts) + 1))[:args.requests]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "flexguard.cli", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "FLEXGUARD_API_KEYS": ""})
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("server did not become ready: " + server.stderr.read().decode()[-2000:])
        asyncio.run(load(url, prompts[:64], 8, 60))  # warm up
        lat, errors, wall = asyncio.run(load(url, prompts, args.concurrency, args.deadline))
        abuse_row = abuse(url, prompts)
    finally:
        server.terminate()
        server.wait(10)

    from flexguard.moderators import get_moderator
    from flexguard.schema import Item

    mod = get_moderator("embedded")
    items = [Item(id=str(i), prompt=p) for i, p in enumerate(prompts[:2000])]
    t = time.perf_counter()
    for s in range(0, len(items), 32):
        mod.score(items[s:s + 32])
    inproc = len(items) / (time.perf_counter() - t)
    ms = np.array(lat) * 1000
    row = {"requests": len(lat), "concurrency": args.concurrency, "errors": errors, "throughput_rps": round(len(lat) / wall, 1),
           "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
           "p99_ms": round(float(np.percentile(ms, 99)), 1), "in_process_items_per_s": round(inproc, 1),
           "overhead_ratio": round(inproc / (len(lat) / wall), 2)}
    print(table([row], list(row)))
    print(table([abuse_row], list(abuse_row)))
    print(f"-> {write_result('server_load', {'result': row, 'abuse': abuse_row, 'model': 'embedded'})}")


def abuse(url: str, prompts: list[str]) -> dict:
    """Figures of the abuse scenarios (see the module docstring)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    host, port = url.removeprefix("http://").split(":")
    t = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 300000000\r\n\r\n")
        status_300mb = s.recv(64).split(b" ")[1].decode()
    announce_ms = (time.perf_counter() - t) * 1000
    million = b'{"input": [' + b",".join([b'"w"'] * 1_000_000) + b"]}"
    t = time.perf_counter()
    r = httpx.post(f"{url}/v1/moderations", content=million, headers={"Content-Type": "application/json"}, timeout=120)
    million_ms, million_status = (time.perf_counter() - t) * 1000, r.status_code

    big = {"input": (prompts * 3)[:256]}
    with ThreadPoolExecutor(16) as pool:
        bigs = [pool.submit(httpx.post, f"{url}/v1/moderations", json=big, timeout=300) for _ in range(12)]
        time.sleep(0.5)
        small_ms, health_ms = [], []
        while not all(f.done() for f in bigs):
            t = time.perf_counter()
            httpx.get(f"{url}/healthz", timeout=60)
            health_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            httpx.post(f"{url}/v1/moderations", json={"input": prompts[len(small_ms)]}, timeout=300)
            small_ms.append((time.perf_counter() - t) * 1000)
        statuses = [f.result().status_code for f in bigs]
    for i in range(2000):
        httpx.get(f"{url}/random/{i}/{'x' * 40}")
    metrics_kb = len(httpx.get(f"{url}/metrics").text) / 1024
    return {"announced_300MB_status": status_300mb, "announced_300MB_reply_ms": round(announce_ms, 1),
            "million_items_status": million_status, "million_items_reply_ms": round(million_ms, 1),
            "big_requests_ok": statuses.count(200), "big_requests_shed_429": statuses.count(429),
            "small_during_big_p50_ms": round(float(np.median(small_ms)), 1) if small_ms else None,
            "small_during_big_max_ms": round(float(np.max(small_ms)), 1) if small_ms else None,
            "healthz_during_big_max_ms": round(float(np.max(health_ms)), 1) if health_ms else None,
            "metrics_kb_after_2000_random_paths": round(metrics_kb, 1)}


if __name__ == "__main__":
    main()
