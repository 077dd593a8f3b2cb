"""Peak memory and time of token log-probs + entropy (forward and backward): naive vs chunked.

naive:    logits = hidden @ W.T; logp_all = log_softmax(logits.float()); gather; entropy under no_grad.
chunked:  restlit.objective.logprobs_and_entropy_from_hidden (LM head applied per chunk, recomputed in the
          backward).

Each variant runs in fresh subprocesses, interleaved with the others; its peak is ``ru_maxrss`` after the work minus ``ru_maxrss`` after
building the inputs (hidden states, LM head weight, tokens), so it counts only what the computation adds.
Gradients w.r.t. the hidden states and the LM head weight are compared with the naive ones.

    .venv/bin/python benchmarks/bench_objective.py            # batch 16, 512 tokens, vocab 49,152
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(args: argparse.Namespace) -> None:
    import torch

    from restlit.objective import logprobs_and_entropy_from_hidden

    torch.manual_seed(0)
    hidden = torch.randn(args.batch, args.tokens, args.hidden).requires_grad_()
    weight = (0.05 * torch.randn(args.vocab, args.hidden)).requires_grad_()
    tokens = torch.randint(0, args.vocab, (args.batch, args.tokens))
    upstream = torch.randn(args.batch, args.tokens)  # stands in for d loss / d logp
    base = _rss_mib()

    def naive():
        logits = hidden @ weight.T
        logp_all = torch.log_softmax(logits.float(), dim=-1)
        logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    def chunked():
        return logprobs_and_entropy_from_hidden(hidden, weight, tokens, chunk_size=args.chunk)

    run = naive if args.worker == "naive" else chunked
    times = []
    for _ in range(args.repeats):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        logp, entropy = run()
        (logp * upstream).sum().backward()
        times.append(time.perf_counter() - start)
    peak = _rss_mib()
    torch.save({"logp": logp.detach(), "entropy": entropy, "grad_h": hidden.grad, "grad_w": weight.grad},
               args.out)
    print(json.dumps({"times": times, "base": base, "peak": peak}))


def _run(variant: str, chunk: int, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--chunk", str(chunk), "--out", str(out),
           "--batch", str(args.batch), "--tokens", str(args.tokens), "--vocab", str(args.vocab),
           "--hidden", str(args.hidden), "--repeats", str(args.repeats)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--hidden", type=int, default=576, help="SmolLM2-135M's hidden size")
    p.add_argument("--chunks", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--repeats", type=int, default=2, help="passes per process")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, interleaved")
    p.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    p.add_argument("--worker", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    from benchmarks._results import markdown_table, record

    variants = [("naive", 0)] + [("chunked", c) for c in args.chunks]
    load_before = os.getloadavg()[0]
    runs: dict[tuple[str, int], list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the variants, so a burst of load from other processes hits all of them alike.
        for _ in range(args.rounds):
            for variant, chunk in variants:
                runs[variant, chunk].append(_run(variant, chunk, args, Path(tmp) / f"{variant}{chunk}.pt"))
        ref = torch.load(Path(tmp) / "naive0.pt")
        outputs = {c: torch.load(Path(tmp) / f"chunked{c}.pt") for c in args.chunks}
    load_after = os.getloadavg()[0]

    def summary_of(variant: tuple[str, int]) -> tuple[float, float, float]:
        rs = runs[variant]
        times = [t for r in rs for t in r["times"]]
        return min(times), statistics.median(times), max(r["peak"] - r["base"] for r in rs)

    n_best, n_median, n_mem = summary_of(("naive", 0))
    rows = [["naive `log_softmax(logits.float())`", "-", f"{n_best:.2f}", f"{n_median:.2f}", f"{n_mem:,.0f}",
             "1.00", "1.00", "-", "-"]]
    verdicts = []
    for chunk in args.chunks:
        best, median, mem = summary_of(("chunked", chunk))
        got = outputs[chunk]
        d_logp = max((got[k] - ref[k]).abs().max().item() for k in ("logp", "entropy"))
        d_grad = max(((got[k] - ref[k]).norm() / ref[k].norm()).item() for k in ("grad_h", "grad_w"))
        rows.append(["chunked (`logprobs_and_entropy_from_hidden`)", chunk, f"{best:.2f}", f"{median:.2f}",
                     f"{mem:,.0f}", f"{mem / n_mem:.3f}", f"{best / n_best:.2f}", f"{d_logp:.1e}",
                     f"{d_grad:.1e}"])
        verdicts.append((chunk, mem / n_mem <= 0.25 and best <= n_best))
    headers = ["variant", "chunk", "fwd+bwd s (best)", "s (median)", "peak MiB over inputs", "peak / naive",
               "best time / naive", "max abs diff logp, H", "rel diff grads"]
    table = markdown_table(headers, rows)
    met = [c for c, ok in verdicts if ok]
    summary = (
        f"batch {args.batch} x {args.tokens} completion tokens, vocab {args.vocab:,}, hidden {args.hidden}, "
        f"float32, temperature 1; {args.rounds} interleaved rounds of {args.repeats} forward+backward passes per "
        f"variant, each round a fresh process; time = best pass (the machine is shared: load average "
        f"{load_before:.1f} before, {load_after:.1f} after); peak = ru_maxrss minus its value after building "
        f"the inputs, worst round. Goal: peak <= 0.25x naive and no slower: "
        + (f"met with chunk {', '.join(map(str, met))}." if met else "NOT met by any chunk size.")
    )
    print(table)
    print()
    print(summary)
    if not args.no_record:
        record("objective", "Token log-probs and entropy: naive vs chunked", summary + "\n\n" + table,
               "python benchmarks/bench_objective.py")


if __name__ == "__main__":
    main()
