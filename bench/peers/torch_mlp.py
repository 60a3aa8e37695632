#!/usr/bin/python3
"""PyTorch reference peer for holdfast's fmnist_mlp: the same MLP on Fashion-MNIST.

Model: 784 -> [Linear(h) + ReLU + Dropout(rate)] per hidden width -> Linear(10) logits,
softmax cross-entropy from logits, Adam(lr, betas=(0.9, 0.999), eps=1e-7) (Keras defaults),
Glorot-uniform weights and zero biases (as holdfast/Keras). Pixels in [0, 1], flattened.
Each epoch visits the training samples in a fresh torch.randperm order; the last batch
may be partial.

Only the training loop is timed (data loading, model construction and evaluation are not).
For speed run with the OpenMP OpenBLAS (bench/train.py does this):
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 torch_mlp.py ...

--ddp runs DistributedDataParallel (gloo, localhost) over --nproc processes started with
torch.multiprocessing.spawn, one thread each; every rank takes its contiguous slice of each
global batch (global batch = --batch). Rank 0 evaluates and writes the summary.
"""

import argparse
import gzip
import json
import os
import socket
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------------------- data

def read_idx(path):
    """Reads a (possibly gzipped) IDX file into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size mismatch {data.size} vs {dims}")
    return data.reshape(dims)


def find_file(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(data_dir, stem + "[.gz]"))


def load_split(data_dir, prefix, limit=0):
    images = read_idx(find_file(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_file(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if limit and limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x.contiguous(), y.contiguous()


# ---------------------------------------------------------------------------- model

def build_model(hidden, dropout, num_classes=10, in_features=784):
    layers = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def evaluate(model, x, y, batch=1000):
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            loss_sum += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return loss_sum / len(x), correct / len(x)


def blas_library():
    """The BLAS shared object actually mapped into this process (to verify the switch)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return sorted(libs)
    except OSError:
        return []


# ---------------------------------------------------------------------------- training

def train(args, rank=0, world=1):
    """Trains on this process; returns the summary dict (meaningful on rank 0)."""
    ddp = world > 1 or args.ddp
    torch.manual_seed(args.seed + rank)  # init (overwritten by DDP's broadcast) and dropout
    x_train, y_train = load_split(args.data, "train", args.train_samples)
    x_test, y_test = load_split(args.data, "t10k")
    n = len(x_train)

    model = build_model(args.hidden, args.dropout)
    if ddp:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model)
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-7,
                               foreach=True if args.foreach else None)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                              foreach=True if args.foreach else None)

    # Same permutation on every rank (same generator seed); the global batch
    # [i, i+B) is split into `world` contiguous slices, this rank takes slice `rank`.
    gen = torch.Generator()
    gen.manual_seed(args.seed)
    B = args.batch
    steps = 0
    epoch_loss = 0.0
    epochs_completed = 0
    log = not args.quiet and rank == 0

    if ddp:
        dist.barrier()
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        te = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_acc = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, B):
            gsize = min(B, n - start)
            lo = start + (gsize * rank) // world
            hi = start + (gsize * (rank + 1)) // world
            idx = perm[lo:hi]
            xb = x_train.index_select(0, idx)
            yb = y_train.index_select(0, idx)
            logits = model(xb)
            # sum / global batch, times world because DDP averages gradients over
            # ranks: uneven slices then still give the single-process gradient.
            loss = F.cross_entropy(logits, yb, reduction="sum") * (world / gsize)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_acc += loss.detach() * (gsize / world)  # per-sample loss sum of this slice
            steps += 1
        if ddp:
            dist.all_reduce(loss_acc)
        epoch_loss = loss_acc.item() / n
        epochs_completed += 1
        if log:
            dt = time.perf_counter() - te
            print(f"epoch {epoch + 1}/{args.epochs} loss {epoch_loss:.4f} "
                  f"{dt:.2f}s {n / dt:.0f} samples/s", file=sys.stderr, flush=True)
    if ddp:
        dist.barrier()
    train_seconds = time.perf_counter() - t0

    summary = None
    if rank == 0:
        net = model.module if ddp else model
        test_loss, test_acc = evaluate(net, x_test, y_test)
        samples = n * epochs_completed
        summary = {
            "framework": "torch",
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "blas_library": blas_library(),
            "epochs_completed": epochs_completed,
            "steps": steps,
            "final_train_loss": epoch_loss,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "world_size": world,
            "samples_per_second": samples / train_seconds if train_seconds > 0 else 0.0,
            "train_seconds": train_seconds,
            "train_samples": n,
            "threads": torch.get_num_threads(),
            "hidden": list(args.hidden),
            "batch": B,
            "dropout": args.dropout,
            "optimizer": args.optimizer,
            "foreach": bool(args.foreach),
            "lr": args.lr,
            "seed": args.seed,
            "ddp": ddp,
            "backend": "gloo" if ddp else None,
        }
        if log:
            print(f"test accuracy {test_acc:.4f} loss {test_loss:.4f}; "
                  f"{summary['samples_per_second']:.0f} samples/s over {train_seconds:.2f}s",
                  file=sys.stderr, flush=True)
    return summary


def write_summary(args, summary):
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


def ddp_worker(rank, args, world, port):
    import torch.distributed as dist
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        summary = train(args, rank, world)
        if rank == 0:
            write_summary(args, summary)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_hidden(text):
    try:
        widths = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --hidden {text!r}")
    if not widths or any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"bad --hidden {text!r}")
    return widths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="dir with {train,t10k}-*-ubyte[.gz]")
    p.add_argument("--hidden", type=parse_hidden, default=[256, 32],
                   help="comma-separated hidden widths (default 256,32)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=None, help="default 0.001 (adam), 0.01 (sgd)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--foreach", action="store_true",
                   help="Adam/SGD with foreach=True (multi-tensor); default: torch's default")
    p.add_argument("--batch", type=int, default=50, help="global batch size")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (0: torch default); ignored with --ddp (1 each)")
    p.add_argument("--train-samples", type=int, default=0,
                   help="use the first N training samples (0: all 60000)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines on stderr")
    p.add_argument("--summary-json", metavar="FILE", help="write a JSON summary here")
    p.add_argument("--ddp", action="store_true",
                   help="DistributedDataParallel (gloo) over --nproc local processes")
    p.add_argument("--nproc", type=int, default=2, help="world size for --ddp (default 2)")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adam" else 1e-2
    if args.batch <= 0 or args.epochs < 0:
        p.error("--batch must be > 0 and --epochs >= 0")

    if args.ddp:
        import torch.multiprocessing as mp
        if args.batch < args.nproc:
            p.error("--batch must be >= --nproc")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.spawn(ddp_worker, args=(args, args.nproc, free_port()), nprocs=args.nproc,
                 join=True)
        return 0

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    summary = train(args)
    write_summary(args, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
