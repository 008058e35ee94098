"""Train a small PyTorch CNN on Fashion-MNIST with a lopt learned optimizer (no learning rate).

Usage::

    python examples/torch_fashion_mnist.py                     # pretrained "default", 500 steps
    python examples/torch_fashion_mnist.py --theta runs/c/theta.safetensors --steps 2000

The data comes from Debian's ``dataset-fashion-mnist`` package through
``lopt.tasks.datasets`` (scikit-learn's 8x8 digits where it is not installed); the CNN adapts
to either image size. Prints the training loss every ``--log-every`` steps and the test
accuracy at the end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import lopt.torch
from lopt.tasks import datasets


def load_data(name: str = "fashion_mnist") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{split: (x [N, 1, H, W] float32 normalised, y [N] int64)}``; digits if ``name`` is missing."""
    try:
        ds = datasets.load(name, image_size=28)
    except datasets.DatasetNotFoundError:
        ds = datasets.load("digits", image_size=8)
    out = {}
    for split, arrays in ds.splits.items():
        x = np.asarray(arrays["x"], np.float32) * ds.info.x_scale + ds.info.x_shift
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
        out[split] = (x, torch.from_numpy(np.asarray(arrays["y"], np.int64)))
    return out


class SmallCNN(nn.Module):
    """Two 3x3 conv layers (16, 32 channels) with ReLU and pooling, then a linear classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def train(
    theta: object = "default",
    *,
    steps: int = 500,
    batch_size: int = 128,
    seed: int = 0,
    log_every: int = 50,
    dataset: str = "fashion_mnist",
) -> dict[str, object]:
    """Trains :class:`SmallCNN` for ``steps`` steps with ``lopt.torch.LearnedOptimizer(theta)``.

    Args:
        theta: a theta file, a pretrained name or ``(theta, learned_optimizer)``.
        steps: training steps (also the optimizer's ``num_steps``).
        batch_size: examples per step, drawn with replacement.
        seed: seeds the model's init and the batches.
        log_every: print the running loss every this many steps (0: never).
        dataset: a ``lopt.tasks.datasets`` image dataset name.

    Returns:
        ``{"losses": per-step training losses, "test_accuracy": float, "seconds": float}``.
    """
    torch.manual_seed(seed)
    data = load_data(dataset)
    x_train, y_train = data["train"]
    model = SmallCNN()
    opt = lopt.torch.LearnedOptimizer(model.parameters(), theta, num_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(len(x_train), (batch_size,), generator=generator)

        def closure(index=index):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            return loss.detach()

        losses.append(opt.step(closure).item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:5d}  loss {np.mean(losses[-log_every:]):.4f}")
    seconds = time.perf_counter() - start
    x_test, y_test = data["test"]
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return {"losses": losses, "test_accuracy": accuracy, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--theta", default="default", help="theta file or pretrained name")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args()
    result = train(args.theta, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                   log_every=args.log_every)
    print(f"test accuracy {result['test_accuracy']:.4f} after {args.steps} steps "
          f"({result['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
