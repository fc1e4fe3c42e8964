"""ResNet18 training-step throughput: nc_jax (Flax, jitted) vs PyTorch eager, same shape and batch.

    python -m experiments.benchmarks.bench_resnet                 # CPU, batch 32, width 64
    python -m experiments.benchmarks.bench_resnet --width 16      # quicker on a small CPU
    python -m experiments.benchmarks.bench_resnet --gpu           # batch 128 and 512, CIFAR-10 shape,
                                                                  # plus one epoch's wall time (50k images)

Reports the median of ``--steps`` timed steps after ``--warmup`` untimed ones (compilation
excluded), in images/s, and the JAX/PyTorch ratio when torch is importable (the comparison is
skipped with a message otherwise). Both sides: SGD momentum 0.9, MSE loss, weight decay 5e-4,
BatchNorm in training mode, float32, CIFAR stem.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

from experiments import harness


def bench_jax(batch: int, width: int, steps: int, warmup: int, image: int = 32, classes: int = 10):
    import jax
    import numpy as np

    from nc_jax import train

    cfg = train.TrainConfig(dataset="synthetic", width=width, batch_size=batch, progress=False)
    model = train.create_model(cfg, classes)
    tx = train.create_optimizer(cfg, 1)
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    data_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.jit(lambda k: train.create_train_state(model, tx, (image, image, 3), key=k), out_shardings=repl)(
        jax.random.key(0, impl="rbg"))
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, loss_fn=train.make_loss_fn(cfg, classes),
                                     weight_decay=cfg.weight_decay), out_shardings=(repl, repl),
                   donate_argnums=(0,) if devices[0].platform != "cpu" else ())
    rng = np.random.default_rng(0)
    b = {"image": jax.device_put(rng.normal(size=(batch, image, image, 3)).astype(np.float32), data_sh),
         "label": jax.device_put(rng.integers(0, classes, batch).astype(np.int32), data_sh)}
    t0 = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        state, m = step(state, b)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, b)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s, devices[0].device_kind, len(devices)


def bench_torch(batch: int, width: int, steps: int, warmup: int, image: int = 32, classes: int = 10):
    try:
        import torch
        import torch.nn as tnn
    except ImportError:
        return None
    torch.manual_seed(0)

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = tnn.BatchNorm2d(cout)
            self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = tnn.BatchNorm2d(cout)
            self.sc = (tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else tnn.Identity())

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.sc(x))

    w = width
    layers = [tnn.Conv2d(3, w, 3, 1, 1, bias=False), tnn.BatchNorm2d(w), tnn.ReLU()]
    cin = w
    for i in range(4):
        for j in range(2):
            layers.append(Block(cin, w * 2**i, 2 if (i > 0 and j == 0) else 1))
            cin = w * 2**i
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, classes)]
    net = tnn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, image, image)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (batch,)), classes).float()
    dev = "cuda" if torch.cuda.is_available() and "--gpu" in sys.argv else "cpu"
    net, x, y = net.to(dev), x.to(dev), y.to(dev)

    def one():
        opt.zero_grad()
        loss = tnn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    return statistics.median(harness.timings(one, steps, warmup=warmup))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gpu", action="store_true", help="batch 128 and 512 on the CIFAR-10 shape + epoch time")
    args = p.parse_args(argv)
    batches = (128, 512) if args.gpu else (args.batch,)
    for batch in batches:
        t_jax, compile_s, kind, ndev = bench_jax(batch, args.width, args.steps, args.warmup)
        print(f"[jax]   {kind} x{ndev}  ResNet18 width {args.width}, batch {batch}, 32x32x3: "
              f"{batch / t_jax:9.1f} images/s  (median step {t_jax * 1e3:.1f} ms, compile {compile_s:.1f} s)")
        if args.gpu:
            steps = 50000 // batch
            print(f"[jax]   one CIFAR-10 epoch ({steps} steps of {batch}): {steps * t_jax:.1f} s "
                  f"(from the median step; evaluation and data transfer excluded)")
        t_torch = bench_torch(batch, args.width, args.steps, args.warmup)
        if t_torch is None:
            print("[torch] not installed: comparison skipped (pip install torch to compare)")
        else:
            print(f"[torch] eager, same shape: {batch / t_torch:9.1f} images/s  (median step {t_torch * 1e3:.1f} ms)")
            print(f"ratio jax/torch images/s: {t_torch / t_jax:.2f}")
    return 0


if __name__ == "__main__":
    harness.run(main)
