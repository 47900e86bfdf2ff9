"""`hataori api` under load: batched decoding against one client at a time, side by side in one run.

A `small`-preset GPT (random weights, GPT-2's 50,257-token vocabulary, 256-token window) is served
by `hataori api` in its own process. The same set of streaming completion requests (prompts cut
from the-verdict.txt, max_tokens each, temperature 0.8, a seed per request) is sent

  - one client at a time (each request waits for the one before),
  - by 8 concurrent clients (the server decodes them together, --max-batch 8),
  - by 8 concurrent clients to a server that decodes one at a time (--max-batch 1: the peer without batching),

and the table reports aggregate generated tokens/s (tokens counted by the server's `usage`), the
ratio to one client at a time, and p50/p99 time to first token and inter-token latency (the gap
between two streamed chunks) as the clients saw them. For reference, `model.generate` in this
process (no HTTP) on the same requests. Rows 1 and 2 alternate `--reps` times (median shown).

`--soak SECONDS` then runs concurrent clients for that long against a --max-batch 8 server: a
mix of streamed requests read to the end, streams dropped after a few tokens, and non-streamed
requests with n=2. It reports requests, errors, rows still busy after the clients stop (leaks)
and the server's resident memory over time, and exits 1 on any error, leak, or memory growth.

    .venv/bin/python bench/api_bench.py [--quick] [--reps 2] [--clients 8] [--max-tokens 64] [--soak 300]
                                        [--preset small] [--device cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from run_all import cpu_busy_fraction  # noqa: E402

from model.config import EOT, TOKENIZER_FILE, GPTConfig  # noqa: E402
from model.generate import generate  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.hf import export_hf_gpt2  # noqa: E402
from tokenizer_rs import Tokenizer  # noqa: E402

MODEL = "small"


# ------------------------------------------------------------------------------------ the server


def make_model(root: Path, preset: str) -> Path:
    tokenizer_json = common.gpt2_files()[2]
    torch.manual_seed(0)
    return export_hf_gpt2(GPT(GPTConfig.preset(preset, vocab_size=50257)), root / MODEL, tokenizer_json)


class Server:
    def __init__(self, model_dir: Path, max_batch: int, max_queue: int = 256, device: str = "cpu",
                 threads: int | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [common.PYTHON, "-m", "pipeline.cli", "api", "--checkpoint", str(model_dir), "--port", str(self.port),
             "--max-batch", str(max_batch), "--max-queue", str(max_queue), "--device", device,
             *(["--threads", str(threads)] if threads else [])],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=common.REPO)
        deadline = time.monotonic() + 300
        while True:
            try:
                self.health()
                return
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"hataori api did not start:\n{self.output()[-3000:]}")
                time.sleep(0.2)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ------------------------------------------------------------------------------------ clients


@dataclass
class Result:
    tokens: int = 0
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    error: str | None = None
    completed: bool = False


def requests_for(n: int, max_tokens: int, seed: int = 0) -> list[dict]:
    text = (common.data_dir() / "the-verdict.txt").read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = rng.randrange(len(text) - 60)
        out.append({"model": MODEL, "prompt": " ".join(text[start: start + rng.randrange(4, 40)]),
                    "max_tokens": max_tokens, "temperature": 0.8, "seed": i, "stream": True,
                    "stream_options": {"include_usage": True}})
    return out


async def stream_one(client: httpx.AsyncClient, url: str, body: dict, drop_after: int | None = None) -> Result:
    """One streamed completion; with `drop_after`, the client disconnects after that many chunks."""
    result, sent = Result(), time.perf_counter()
    last = None
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    result.completed = True
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    result.error = event["error"]["message"]
                    break
                if event.get("usage"):
                    result.tokens = event["usage"]["completion_tokens"]
                if event["choices"] and event["choices"][0]["text"]:
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - sent
                    else:
                        result.gaps.append(now - last)
                    last = now
                    if drop_after is not None and len(result.gaps) + 1 >= drop_after:
                        return result  # leaving the block closes the connection mid-stream
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


async def run_load(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[Result]]:
    queue = list(bodies)
    results: list[Result] = []
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        async def worker() -> None:
            while queue:
                results.append(await stream_one(client, url, queue.pop(0)))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summarize(name: str, walls: list[float], runs: list[list[Result]], baseline: float | None) -> tuple[list, float]:
    for results in runs:
        bad = [r.error for r in results if r.error or not r.completed]
        if bad:
            raise SystemExit(f"{name}: {len(bad)} requests failed, e.g. {bad[0]}")
    rates = [sum(r.tokens for r in results) / wall for wall, results in zip(walls, runs)]
    rate = statistics.median(rates)
    pooled = [r for results in runs for r in results]
    ttft = [r.ttft * 1000 for r in pooled if r.ttft is not None]
    gaps = [g * 1000 for r in pooled for g in r.gaps]
    ratio = f"{rate / baseline:.2f}x" if baseline else "1.00x"
    return [name, sum(r.tokens for r in runs[0]), rate, ratio, pct(ttft, 50), pct(ttft, 99), pct(gaps, 50),
            pct(gaps, 99)], rate


def in_process_rates(model_dir: Path, bodies: list[dict], device: str, rows: int) -> tuple[float, float]:
    """Tokens/s without HTTP: model.generate one request at a time, and BatchedDecoder with `rows`
    requests at a time (what the server's decoding thread does, alone)."""
    from model.batched import BatchedDecoder, Sampling
    from model.checkpoint import load_pretrained

    model, _ = load_pretrained(model_dir, device)
    model.eval()
    tok = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    eot = tok.token_to_id(EOT)
    prompts = [tok.encode(body["prompt"]) for body in bodies]
    for _ in generate(model, prompts[0], 8):  # warm-up
        pass
    t0, tokens = time.perf_counter(), 0
    for body, prompt in zip(bodies, prompts):
        tokens += sum(1 for _ in generate(model, prompt, body["max_tokens"], temperature=body["temperature"],
                                          seed=body["seed"], stop_id=eot))
    alone = tokens / (time.perf_counter() - t0)
    decoder, waiting, tokens = BatchedDecoder(model, rows), list(range(len(bodies))), 0
    t0 = time.perf_counter()
    while waiting or decoder.rows:
        while waiting and decoder.free_slots:
            i = waiting.pop(0)
            body = bodies[i]
            tokens += decoder.join(i, prompts[i], Sampling(max_new_tokens=body["max_tokens"], seed=body["seed"],
                                                           temperature=body["temperature"],
                                                           stop_ids=frozenset({eot}))).token is not None
        tokens += sum(e.token is not None for e in decoder.step())
    return alone, tokens / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ soak


async def soak(server: Server, seconds: float, clients: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    prompts = [b["prompt"] for b in requests_for(64, 8, seed)]
    counts = {"streams": 0, "dropped": 0, "non_streamed": 0, "errors": 0}
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            body = {"model": MODEL, "prompt": rng.choice(prompts), "max_tokens": rng.randrange(8, 96),
                    "temperature": rng.choice([0.0, 0.8, 1.0])}
            kind = rng.random()
            if kind < 0.1:
                response = await client.post(f"{server.url}/v1/completions", json={**body, "n": 2})
                ok = response.status_code == 200 and len(response.json()["choices"]) == 2
                counts["non_streamed"] += 1
                error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
            else:
                drop = rng.randrange(1, 6) if kind < 0.3 else None
                result = await stream_one(client, server.url, {**body, "stream": True}, drop_after=drop)
                counts["dropped" if drop else "streams"] += 1
                error = result.error or (None if drop or result.completed else "stream ended without [DONE]")
            if error:
                counts["errors"] += 1
                errors.append(error)

    memory: list[tuple[float, float]] = []

    async def sample_memory() -> None:
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            memory.append((time.monotonic() - t0, server.rss_mb()))
            await asyncio.sleep(5)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as client:
        await asyncio.gather(sample_memory(), *(client_loop(client) for _ in range(clients)))
    await asyncio.sleep(0.5)
    state = server.health()
    for _ in range(50):  # dropped streams are freed before the next step; give the server a moment
        if state["active"] == 0 and state["queued"] == 0:
            break
        await asyncio.sleep(0.1)
        state = server.health()
    memory.append((seconds, server.rss_mb()))
    return {**counts, "error_examples": errors[:3], "leaked_rows": state["active"] + state["queued"],
            "tokens": state["tokens"], "memory": memory}


def report_soak(result: dict, seconds: float) -> bool:
    memory = result["memory"]
    warm = next((mb for t, mb in memory if t >= min(60.0, seconds / 5)), memory[0][1])
    end, peak = memory[-1][1], max(mb for _, mb in memory)
    growth = end - warm
    flat = growth <= max(20.0, 0.05 * warm)
    common.print_table(
        ["seconds", "streams read to the end", "streams dropped mid-way", "non-streamed (n=2)", "tokens", "errors",
         "rows busy after", "RSS after warm-up MB", "RSS at end MB", "RSS peak MB", "memory flat"],
        [[seconds, result["streams"], result["dropped"], result["non_streamed"], result["tokens"], result["errors"],
          result["leaked_rows"], warm, end, peak, flat]],
        title="Soak: concurrent clients, some disconnecting mid-stream",
        notes=[f"RSS samples (s: MB): {', '.join(f'{t:.0f}: {mb:.0f}' for t, mb in memory[:: max(1, len(memory) // 12)])}",
               *(f"error: {e}" for e in result["error_examples"])])
    return result["errors"] == 0 and result["leaked_rows"] == 0 and flat


# ------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter requests; one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of the first two rows (default 2; quick 1)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=None, help="requests per row (default 16; quick 8)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per request (default 64; quick 32)")
    ap.add_argument("--preset", default=MODEL)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in the server (and for model.generate here); default: torch's")
    ap.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="also run the soak (the issue's: 300)")
    ap.add_argument("--soak-clients", type=int, default=12)
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 2)
    n = args.requests or (8 if args.quick else 16)
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    bodies = requests_for(n, max_tokens)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp), args.preset)
        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"model: preset {args.preset}, vocabulary 50,257, random weights; {n} requests x {max_tokens} tokens, "
              f"temperature 0.8; torch threads: {args.threads or torch.get_num_threads()}; CPU busy before start "
              f"(other processes): {cpu_busy_fraction() * 100:.0f}%", flush=True)
        server = Server(model_dir, max_batch=args.clients, device=args.device, threads=args.threads)
        asyncio.run(run_load(server.url, bodies[:2], 2))  # warm-up
        walls: dict[str, list] = {"one": [], "many": []}
        runs: dict[str, list] = {"one": [], "many": []}
        for _ in range(reps):
            for key, concurrency in (("one", 1), ("many", args.clients)):
                wall, results = asyncio.run(run_load(server.url, bodies, concurrency))
                walls[key].append(wall)
                runs[key].append(results)
        server.stop()
        peer = Server(model_dir, max_batch=1, device=args.device, threads=args.threads)
        asyncio.run(run_load(peer.url, bodies[:2], 2))
        peer_wall, peer_results = asyncio.run(run_load(peer.url, bodies, args.clients))
        peer.stop()
        in_process, in_process_batched = in_process_rates(model_dir, bodies, args.device, args.clients)

        one_row, one_rate = summarize("1 client at a time", walls["one"], runs["one"], None)
        many_row, many_rate = summarize(f"{args.clients} concurrent clients, --max-batch {args.clients}", walls["many"],
                                        runs["many"], None)
        peer_row, _ = summarize(f"{args.clients} concurrent clients, --max-batch 1 (no batching)", [peer_wall],
                                [peer_results], None)
        for row, rate in ((one_row, one_rate), (many_row, many_rate), (peer_row, peer_row[2])):
            row[3] = f"{rate / one_rate:.2f}x"
        common.print_table(
            ["clients", "tokens", "aggregate tokens/s", "vs 1 at a time", "TTFT p50 ms", "TTFT p99 ms",
             "inter-token p50 ms", "inter-token p99 ms"],
            [one_row, many_row, peer_row],
            title=f"hataori api, {args.preset} model, streaming completions ({args.device})",
            notes=[f"Without HTTP, in this process: model.generate one request at a time {in_process:.0f} tokens/s "
                   f"(the server's one-at-a-time row is {one_rate / in_process:.2f}x of it); BatchedDecoder with "
                   f"{args.clients} rows {in_process_batched:.0f} tokens/s ({in_process_batched / in_process:.2f}x).",
                   f"Goal: {args.clients} concurrent clients >= 3x one client at a time: "
                   f"{'met' if many_rate >= 3 * one_rate else 'NOT met'} ({many_rate / one_rate:.2f}x)."])

        ok = True
        if args.soak:
            server = Server(model_dir, max_batch=8, max_queue=64, device=args.device, threads=args.threads)
            try:
                ok = report_soak(asyncio.run(soak(server, args.soak, args.soak_clients)), args.soak)
            finally:
                server.stop()
            print(f"\nsoak: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
