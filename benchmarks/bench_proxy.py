"""The guardrail proxy: how early the stream check catches harm, and what the proxy adds to latency.

    python benchmarks/bench_proxy.py [--skip-quality] [--skip-latency]

Quality (FlexBench-R valid responses, the default embedded moderator): each response is
streamed word by word through :class:`flexguard.stream.StreamModerator` (the proxy's
defaults), cut after the first 25 / 50 / 75 / 100 % of its characters; F1 per regime of the
stream's running decision at that point, and how much of what the full-response check flags
is already flagged. In-sample (the model was trained on this split): compare the columns.

Latency (loopback, stops by itself): a fake upstream (``_fake_upstream.py``) streams a
100-token benign answer at 50 tokens/s; clients read it directly and through
``flexguard proxy`` (both servers in their own processes), at concurrency 1 and 32. Reported:
time to the first content token, total time, and the proxy's added time per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import DATA, table, write_result

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quality() -> list[dict]:
    from flexguard.data import load_flexbench
    from flexguard.metrics import evaluate
    from flexguard.moderators import get_moderator
    from flexguard.stream import StreamModerator

    mod = get_moderator("embedded")
    bench = load_flexbench(DATA / "flexbench_r", subset="response")
    tiers = bench.tier_ranks
    rows, full_flags = [], None
    for frac in (1.0, 0.75, 0.5, 0.25):
        scores = []
        for it in bench.items:
            cut = it.response[:max(1, round(len(it.response) * frac))]
            sm = StreamModerator(mod, prompt=it.prompt)
            for word in cut.split(" "):
                if sm.feed(word + " ").flagged:
                    break
            sm.finish()
            scores.append(sm.record["risk_score"] if sm.record else None)
        ev = evaluate(scores, tiers, n_boot=0)
        flags = np.array([s is not None and s > 40 for s in scores])
        if full_flags is None:
            full_flags = flags
        rows.append({"seen": f"{int(frac * 100)}%", **{f"f1_{r}": round(m.f1, 3) for r, m in ev.regimes.items()},
                     "worst_f1": round(ev.worst_f1, 3),
                     "caught_of_full_moderate": round(float(flags[full_flags].mean()), 3) if full_flags.any() else None})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


async def read_stream(url: str, client) -> tuple[float, float, int]:
    """(seconds to the first content token, total seconds, content chunks) of one streamed request."""
    t0 = time.perf_counter()
    first, chunks = None, 0
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:") and '"content": "' in line and '"content": ""' not in line:
                chunks += 1
                first = first or time.perf_counter() - t0
    return first or float("nan"), time.perf_counter() - t0, chunks


async def load(url: str, concurrency: int, requests: int) -> list[tuple[float, float, int]]:
    import httpx

    out: list[tuple[float, float, int]] = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            while len(out) < requests:
                out.append(await read_stream(url, client))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out[:requests]


def wait_ready(url: str) -> None:
    import httpx

    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


def latency() -> list[dict]:
    up_port, px_port = free_port(), free_port()
    env = {**os.environ, "FLEXGUARD_API_KEYS": ""}
    upstream = subprocess.Popen([sys.executable, str(HERE / "_fake_upstream.py"), str(up_port), "50", "100"], env=env)
    proxy = subprocess.Popen([sys.executable, "-m", "flexguard.cli", "proxy", "--upstream",
                              f"http://127.0.0.1:{up_port}/v1", "--port", str(px_port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{up_port}/docs")
        wait_ready(f"http://127.0.0.1:{px_port}/healthz")
        asyncio.run(load(f"http://127.0.0.1:{px_port}", 2, 4))  # warm up the model
        for concurrency in (1, 32):
            n = 8 if concurrency == 1 else 64
            for name, port in (("direct", up_port), ("proxy", px_port)):
                res = asyncio.run(load(f"http://127.0.0.1:{port}", concurrency, n))
                ttft, total, chunks = (np.array(x, float) for x in zip(*res))
                rows.append({"path": name, "concurrency": concurrency, "requests": n,
                             "ttft_p50_ms": round(float(np.nanmedian(ttft)) * 1000, 1),
                             "ttft_p95_ms": round(float(np.nanpercentile(ttft, 95)) * 1000, 1),
                             "total_p50_s": round(float(np.median(total)), 2), "chunks": int(np.median(chunks))})
                print(table(rows[-1:], list(rows[-1])), flush=True)
            direct, via = rows[-2], rows[-1]
            via["added_ms_per_chunk"] = round((via["total_p50_s"] - direct["total_p50_s"]) * 1000 / max(via["chunks"], 1), 2)
    finally:
        for p in (proxy, upstream):
            p.terminate()
            p.wait(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    payload = {}
    if not args.skip_quality:
        payload["stream_prefix_quality"] = quality()
        print(table(payload["stream_prefix_quality"], list(payload["stream_prefix_quality"][0])))
    if not args.skip_latency:
        payload["latency"] = latency()
        print(table(payload["latency"], list(payload["latency"][-1])))
    print(f"-> {write_result('proxy', payload)}")


if __name__ == "__main__":
    main()
