"""Speed options one at a time, against the plain fp32 baseline measured in the same run.

Training step throughput (samples/s) of a plain loop over in-memory tensors, per model, for:
fp32 (baseline), channels_last, bf16 autocast, torch.compile (compile time reported apart);
and evaluation throughput for several eval batch sizes. Alternating repeats, medians.

    nice -n 5 uv run python experiments/bench_options.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def build(model: str):
    from digitlab.models import MLP, LeNet

    if model == "mlp":
        return MLP(), 28
    if model == "lenet":
        return LeNet(), 28
    return LeNet(channels=[6, 16], hidden=[120, 84], activation="relu", input_size=32), 32


def train_rate(net, x, y, steps, batch, clock, autocast=False, channels_last=False) -> float:
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    start = clock()
    for step in range(steps):
        i = slice(step * batch, (step + 1) * batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(x[i]), y[i])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (clock() - start)


def eval_rate(net, x, batch, clock) -> float:
    import torch

    start = clock()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            net(x[i : i + batch])
    return len(x) / (clock() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["mlp", "lenet5"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int)
    p.add_argument("--clock", choices=list(CLOCKS), default="wall")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    results: dict[tuple[str, str], list[float]] = {}
    for model in args.models:
        _, side = build(model)
        x = torch.randn(args.steps * 100, 1, side, side)
        y = torch.randint(0, 10, (len(x),))
        compiled = None
        if args.compile:
            torch.manual_seed(0)
            net, _ = build(model)
            compiled = torch.compile(net)
            start = time.perf_counter()
            train_rate(compiled, x, y, 2, 100, clock)
            print(f"{model}: torch.compile warm-up {time.perf_counter() - start:.1f} s wall")
        for _ in range(args.repeats):
            # Each lambda runs within this iteration; the defaults bind its loop's values anyway.
            runs = {
                "fp32": lambda m=model, x=x, y=y: train_rate(
                    build(m)[0], x, y, args.steps, 100, clock
                ),
                "channels_last": lambda m=model, x=x, y=y: train_rate(
                    build(m)[0], x, y, args.steps, 100, clock, channels_last=True
                ),
                "bf16 autocast": lambda m=model, x=x, y=y: train_rate(
                    build(m)[0], x, y, args.steps, 100, clock, autocast=True
                ),
            }
            if compiled is not None:
                runs["torch.compile"] = lambda c=compiled, x=x, y=y: train_rate(
                    c, x, y, args.steps, 100, clock
                )
            for batch in (1000, 5000, 10000):
                runs[f"eval batch {batch}"] = lambda b=batch, m=model, x=x: eval_rate(
                    build(m)[0], x, b, clock
                )
            for name, run in runs.items():
                results.setdefault((model, name), []).append(run())
    print(
        f"\nmedian samples/s over {args.repeats} repeats, {args.clock} clock, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| model | option | samples/s | vs fp32 train / vs eval batch 1000 |")
    print("|---|---|---:|---:|")
    for (model, name), values in results.items():
        base = "eval batch 1000" if name.startswith("eval") else "fp32"
        ratio = statistics.median(values) / statistics.median(results[(model, base)])
        print(f"| {model} | {name} | {statistics.median(values):,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
