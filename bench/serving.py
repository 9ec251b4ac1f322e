"""Serving four fine-tuned SmolLM2 adapters at 1, 8 and 32 concurrent clients: Tuneforge's own inference
worker (TUNEFORGE_INFERENCE_BACKEND=transformers), vLLM through Tuneforge (=vllm), and vLLM called directly,
all in the same run.

    python -m bench.serving [--clients 1,8,32] [--seconds 60] [--max-tokens 32] [--record]

Each level is a closed loop for `--seconds` (`--workers-seconds` for the inference workers, whose requests
take minutes on a loaded CPU): every client sends a chat to one of the four adapters (in a fixed mix:
client i starts at adapter i mod 4 and moves on by one each request), waits for the whole answer, and
sends the next. At the end of the window requests still running are cancelled and counted as
`unfinished`; only completed ones count. Reported: requests/s, output tokens/s (the responses'
`usage.completion_tokens` over the window), p50 and p99 latency of the completed requests.

The adapters are random LoRAs (bench/lora_jobs.py) recorded as succeeded jobs, so they resolve as trained
ones do; serving cost does not depend on what the weights learnt. Greedy decoding, `max_tokens` fixed.
The embedded default (SQLite, one API process, one inference worker, its model cache raised to 4 so that
the four adapters stay loaded: the workers' best case; with the default of 2 a mix reloads SmolLM2 on
most requests, and one request took 217 s on the loaded machine); vLLM from .venv-vllm
(scripts/vllm_env.sh) with `--max-loras 4`. Each target runs alone: the transformers side is stopped
before vLLM starts, so they never share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import ROOT, record
from bench.smollm2 import DEFAULT_MODELS, MODEL, load_average, model_dir

PROMPTS = [
    "Write a short note to a friend about the weather.",
    "FREE entry! Win a prize now, text WIN to 80086",
    "Explain what a hash table is in one sentence.",
    "List three colours.",
    "Are you coming to dinner tonight?",
    "Summarise the plot of a detective story.",
]


@dataclass
class Level:
    target: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    unfinished: int = 0

    def row(self) -> str:
        n = len(self.latencies)
        lat = sorted(self.latencies) or [float("nan")]
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        return (
            f"| {self.target} | {self.clients} | {n} | {n / self.seconds:.2f} | {self.tokens / self.seconds:.1f} | "
            f"{statistics.median(lat):.2f} | {p99:.2f} | {self.errors} | {self.unfinished} |"
        )


async def run_level(
    target: str, url: str, key: str | None, models: list[str], clients: int, seconds: float, max_tokens: int
) -> Level:
    level = Level(target, clients)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        n = i
        while time.monotonic() < deadline:
            body = {
                "model": models[n % len(models)],
                "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            n += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError:
                level.errors += 1
                continue
            if r.status_code != 200:
                level.errors += 1
                await asyncio.sleep(0.5)
                continue
            level.latencies.append(time.perf_counter() - t0)
            level.tokens += int(r.json()["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(clients)]
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        level.unfinished = len(pending)  # each client has one request in flight at most
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    level.seconds = time.perf_counter() - t0
    return level


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _warm(url: str, key: str | None, models: list[str]) -> None:
    """One request per model first, so that a level measures serving, not first loads."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for m in models:
        body = {"model": m, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=900)
        r.raise_for_status()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workers-seconds", type=float, default=None, help="window for the workers (default --seconds)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--targets", default="transformers,vllm-tuneforge,vllm-direct")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    levels_wanted = [int(c) for c in args.clients.split(",")]
    targets = args.targets.split(",")

    base_dir = model_dir(DEFAULT_MODELS)
    data = Path(tempfile.mkdtemp(prefix="tuneforge-bench-serving-"))
    env = {
        **os.environ,
        "TUNEFORGE_DATA_DIR": str(data),
        "TUNEFORGE_MODELS_DIR": str(DEFAULT_MODELS),
        "TUNEFORGE_MAX_INFERENCE_REQUESTS_PER_ORG": "256",
        "TUNEFORGE_INFERENCE_TIMEOUT_SECONDS": "900",
        "TUNEFORGE_VLLM_MAX_ADAPTERS": "8",
        "TUNEFORGE_INFERENCE_CACHE_SIZE": "4",
    }
    os.environ.update({k: env[k] for k in ("TUNEFORGE_DATA_DIR", "TUNEFORGE_MODELS_DIR")})
    from bench.lora_jobs import publish_adapter_job
    from tuneforge.app.inference.vllm.adapters import adapter_name

    subprocess.run([sys.executable, "-P", "-m", "tuneforge.app.cli", "migrate"], env=env, cwd=ROOT, check=True)
    made = subprocess.run(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", "keys", "create", "--org", "bench", "--json"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    key_info = json.loads(made.stdout)
    key, org = key_info["key"], key_info["organization_id"]
    models = [publish_adapter_job(org, MODEL, base_dir, seed) for seed in range(4)]
    direct_names = [adapter_name(f"artifacts/{m.rsplit(':', 1)[-1]}/adapter") for m in models]
    results: list[Level] = []
    notes: list[str] = []

    if "transformers" in targets:
        port = 18300
        proc = _spawn(["up", "--port", str(port)], env, data / "up.log")
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(f"{url}/healthz", proc, 300)
            _warm(url, key, models)
            window = args.workers_seconds or args.seconds
            for c in levels_wanted:
                results.append(
                    asyncio.run(run_level("workers (transformers)", url, key, models, c, window, args.max_tokens))
                )
                print(results[-1].row(), flush=True)
        finally:
            _stop(proc)

    if "vllm-tuneforge" in targets or "vllm-direct" in targets:
        vport, aport = 18310, 18311
        vllm = _spawn(
            [
                "vllm",
                "--model",
                MODEL,
                "--port",
                str(vport),
                "--max-loras",
                "4",
                "--max-lora-rank",
                "16",
                "--kv-cache-gb",
                "2",
            ],
            env,
            data / "vllm.log",
        )
        api_env = {**env, "TUNEFORGE_INFERENCE_BACKEND": "vllm", "TUNEFORGE_VLLM_URL": f"http://127.0.0.1:{vport}"}
        api = _spawn(
            ["api", "--port", str(aport), "--no-reconciler", "--log-level", "WARNING"], api_env, data / "api.log"
        )
        try:
            vurl, aurl = f"http://127.0.0.1:{vport}", f"http://127.0.0.1:{aport}"
            started = _wait(f"{vurl}/v1/models", vllm, 1200)
            notes.append(f"vLLM started (weights, profile, warm-up) in {started:.0f} s")
            _wait(f"{aurl}/healthz", api, 120)
            _warm(aurl, key, models)  # Tuneforge loads the four adapters into vLLM; direct calls reuse them
            for c in levels_wanted:
                # Alternated per level, so that a drift of the machine's load hits both alike.
                if "vllm-tuneforge" in targets:
                    results.append(
                        asyncio.run(
                            run_level("vLLM via Tuneforge", aurl, key, models, c, args.seconds, args.max_tokens)
                        )
                    )
                    print(results[-1].row(), flush=True)
                if "vllm-direct" in targets:
                    results.append(
                        asyncio.run(
                            run_level("vLLM direct", vurl, None, direct_names, c, args.seconds, args.max_tokens)
                        )
                    )
                    print(results[-1].row(), flush=True)
        finally:
            _stop(api)
            _stop(vllm)

    def tps(target: str, c: int) -> float | None:
        got = [r for r in results if r.target == target and r.clients == c]
        return got[0].tokens / got[0].seconds if got else None

    lines = [
        f"Four random LoRA adapters (r8, q/v) on {MODEL} (SmolLM2-135M-Instruct), a mix across clients, greedy, "
        f"max_tokens {args.max_tokens}, closed loop for {args.seconds:g} s per level "
        f"({args.workers_seconds or args.seconds:g} s for the workers). Load average at the end: "
        f"{load_average()}.",
        "",
        "| target | clients | requests | requests/s | output tokens/s | p50 s | p99 s | errors | unfinished |",
        "|---|---|---|---|---|---|---|---|---|",
        *(r.row() for r in results),
        "",
    ]
    for c in levels_wanted:
        t, v, d = tps("workers (transformers)", c), tps("vLLM via Tuneforge", c), tps("vLLM direct", c)
        parts = []
        if t and v:
            parts.append(f"vLLM via Tuneforge / workers: {v / t:.1f}x output tokens/s")
        if v and d:
            parts.append(f"via Tuneforge / direct: {v / d:.2f}")
        if parts:
            lines.append(f"- {c} clients: " + "; ".join(parts))
    lines += [f"- {n}" for n in notes]
    record("Serving four adapters: the inference workers, vLLM through Tuneforge, vLLM direct", lines, args.record)
    shutil.rmtree(data, ignore_errors=True)  # its database, adapters and logs; the model stays for the next run


if __name__ == "__main__":
    main()
