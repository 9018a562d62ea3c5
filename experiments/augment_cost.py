"""What on-device augmentation costs a training epoch: plain steps against augmented ones.

One LeNet training step (experiment=best's network, batch 128, SGD) on in-memory batches, timed
as the step alone and with each augmentation applied to its batch first, in alternating rounds
(plain, affine, affine + shear + elastic, ...) so machine noise hits all alike; medians of each,
as a ratio to plain. An epoch is its steps, so the step ratio is the epoch ratio.

    uv run --locked python experiments/augment_cost.py --threads 1 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from digitlab.data.augment import RandomAffine
from digitlab.models import LeNet

AUGMENTATIONS = {
    "plain": None,
    "affine (rotation, shift, zoom)": RandomAffine(degrees=10, translate=0.1, scale=0.1),
    "affine + shear + elastic": RandomAffine(
        degrees=10, translate=0.1, scale=0.1, shear=10, elastic=1.5, elastic_sigma=4
    ),
}


def step_seconds(net, optimizer, x, y, augment, generator, steps: int) -> float:
    """Thread CPU seconds per training step, augmentation included."""
    start = time.thread_time()
    for _ in range(steps):
        batch = x if augment is None else augment(x, fill=-0.42, generator=generator)
        loss = F.cross_entropy(net(batch), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.thread_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = LeNet(channels=[32, 64], hidden=[512], activation="relu")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in AUGMENTATIONS}
    for augment in AUGMENTATIONS.values():  # warm-up
        step_seconds(net, optimizer, x, y, augment, generator, 2)
    for _ in range(args.rounds):
        for name, augment in AUGMENTATIONS.items():
            times[name].append(step_seconds(net, optimizer, x, y, augment, generator, args.steps))
    plain = statistics.median(times["plain"])
    print(f"threads={args.threads} batch={args.batch} rounds={args.rounds} steps={args.steps}")
    print("| training step | ms (median) | × plain |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e3:.1f} | {median / plain:.2f} |")


if __name__ == "__main__":
    main()
