"""Bounded load test of `flexguard serve` on loopback (stops by itself).

    python benchmarks/bench_server.py [--requests 5000] [--concurrency 32]

Starts the server with the embedded model in a subprocess on 127.0.0.1, sends N
/v1/moderations requests (one prompt each) with C in flight, and compares throughput with
scoring the same prompts in-process.
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
    print(f"-> {write_result('server_load', {'result': row, 'model': 'embedded'})}")


if __name__ == "__main__":
    main()
