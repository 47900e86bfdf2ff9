"""Decoding speed: hataori's `model.generate.generate` (what `hataori generate` streams from) against
transformers' greedy `GPT2LMHeadModel.generate`, on the same model (ours, exported with
`model.hf.export_hf_gpt2` and loaded by transformers), the same prompt and the same number of
new tokens, in the same process, alternating. Both run greedy with the KV cache and never stop
early; the new tokens must be identical (the script says where they first differ, if they do).
tokens/s counts new tokens over the whole call (prompt included), median of the repetitions.

Models: randomly initialised presets with GPT-2's vocabulary (50,257): `tiny`, `small` and, without
--quick, `gpt2` (124M). On CUDA (`--device cuda`) both run under bf16 (our model cast with
.to(bfloat16), transformers' loaded with torch_dtype=bfloat16).

    .venv/bin/python bench/generate_bench.py [--quick] [--presets tiny,small,gpt2] [--new-tokens 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.config import GPTConfig  # noqa: E402
from model.generate import generate  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.hf import export_hf_gpt2  # noqa: E402

PROMPT = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness,"


def prompt_ids(length: int) -> list[int]:
    """The prompt in GPT-2's tokenizer when the shared data has it, else fixed ids."""
    try:
        from tokenizer_rs import Tokenizer

        ids = Tokenizer.from_file(str(common.gpt2_files()[2])).encode(PROMPT)
    except (SystemExit, OSError, ValueError):
        ids = [(i * 7919) % 50257 for i in range(length)]
    return (ids * (length // len(ids) + 1))[:length]


def bench_preset(preset: str, new_tokens: int, prompt_len: int, reps: int, device: torch.device) -> dict:
    import transformers

    cfg = GPTConfig.preset(preset, vocab_size=50257)
    new_tokens = min(new_tokens, cfg.context_length - prompt_len)  # transformers cannot slide the window
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory(prefix="hataori-generate-bench-") as tmp:
        export_hf_gpt2(ours, tmp)  # no tokenizer: no eos id, so transformers never stops early
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp, dtype=dtype).to(device).eval()
    ours = ours.to(device=device, dtype=dtype)
    prompt = prompt_ids(prompt_len)
    hf_input = torch.tensor([prompt], device=device)
    hf.generation_config.pad_token_id = 0  # silences the "no pad token" notice; there is no padding

    def run_ours() -> list[int]:
        return list(generate(ours, prompt, new_tokens, temperature=0.0))

    @torch.no_grad()
    def run_hf() -> list[int]:
        out = hf.generate(hf_input, max_new_tokens=new_tokens, do_sample=False, use_cache=True)
        return out[0, len(prompt):].tolist()

    runs = {"hataori generate": run_ours, "transformers generate (greedy)": run_hf}
    tokens: dict[str, list[int]] = {name: fn() for name, fn in runs.items()}  # warm-up, and the outputs compared
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(reps):
        for name in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            runs[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    a, b = tokens["hataori generate"], tokens["transformers generate (greedy)"]
    first_diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))
    tps = {name: new_tokens / statistics.median(s) for name, s in seconds.items()}
    return {"preset": preset, "params_m": round(ours.num_parameters() / 1e6, 1), "prompt_tokens": prompt_len,
            "new_tokens": new_tokens, "ours_tokens_per_s": tps["hataori generate"],
            "transformers_tokens_per_s": tps["transformers generate (greedy)"],
            "ratio": tps["hataori generate"] / tps["transformers generate (greedy)"],
            "identical": first_diff is None, "first_difference_at": first_diff, "dtype": str(dtype).removeprefix("torch.")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--presets", default=None, help="default: tiny,small,gpt2 (tiny,small with --quick)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default: 200 (50 with --quick)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    presets = (args.presets or ("tiny,small" if args.quick else "tiny,small,gpt2")).split(",")
    reps = 2 if args.quick else 5
    new_tokens = args.new_tokens or (50 if args.quick else 200)
    import transformers

    print(f"\n## Greedy decoding: hataori vs transformers {transformers.__version__} ({device}, "
          f"{torch.get_num_threads()} threads)\n")
    rows = [bench_preset(p.strip(), new_tokens, args.prompt_tokens, reps, device) for p in presets]
    common.print_table(
        ["model", "prompt + new tokens", "hataori tokens/s", "transformers tokens/s", "hataori / transformers", "same tokens"],
        [[f"{r['preset']}, {r['params_m']}M ({r['dtype']})", f"{r['prompt_tokens']} + {r['new_tokens']}", r["ours_tokens_per_s"],
          r["transformers_tokens_per_s"], f"{r['ratio']:.2f}x",
          "yes" if r["identical"] else f"no (from token {r['first_difference_at']})"] for r in rows],
        notes=[f"Median of {reps} alternating runs per side, after one warm-up run each."])
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                         "transformers": transformers.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
