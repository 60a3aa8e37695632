#!/usr/bin/python3
"""PyTorch reference for bench/first_step.py: a restarted job's time to its first trained step.

With --setup: builds the big model (784-2048-2048-2048-10, ReLU, dropout 0.2, Adam, as
bench/peers/torch_mlp.py), trains one step and saves {"model", "optimizer", "extra"} (extra: a
float32 tensor making --state-mb of state) with holdfast's guarantees: torch.save to a temporary
file, fsync, rename, fsync the directory; the XXH3-64 of the file's bytes goes beside it
(FILE.xxh3), as holdfast's manifest holds its shards' checksums. Without: the restarted job.
Loads the data, builds the model, reads the file, checks its XXH3-64 against FILE.xxh3 (the
verification holdfast makes), torch.load()s it from those bytes, loads the model and optimizer and
trains one step; rank 0 prints one JSON line with the wall-clock time at the end of that step.

Under mpirun (-np 2) every rank reads and verifies the whole file, as a DistributedDataParallel
job restarts, and the step is a DDP step over gloo (TCP on 127.0.0.1).

Run with Debian's torch and the OpenMP OpenBLAS:
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 torch_first_step.py
"""

import time

STARTED = time.time()

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import xxhash  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_mlp import DEFAULT_DATA, build_model, load_split  # noqa: E402
from torch_save import fsync_dir  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the checkpoint file")
    p.add_argument("--setup", action="store_true", help="train one step, save, exit")
    p.add_argument("--state-mb", type=float, default=120,
                   help="MB (1e6 bytes) of state: model and Adam (~120 MB), plus a tensor")
    p.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST directory")
    p.add_argument("--batch", type=int, default=256, help="global batch size")
    p.add_argument("--threads", type=int, default=0, help="threads per process (0: cores / np)")
    args = p.parse_args(argv)

    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    threads = args.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    if world > 1:
        torch.distributed.init_process_group(
            "gloo", init_method="tcp://127.0.0.1:29517", rank=rank, world_size=world)

    t = time.time()
    x, y = load_split(args.data, "train", limit=args.batch)
    load_seconds = time.time() - t

    t = time.time()
    torch.manual_seed(42)
    model = build_model([2048, 2048, 2048], 0.2)
    params = sum(q.numel() for q in model.parameters())
    extra_floats = max(0, int((args.state_mb * 1e6 - 3 * 4 * params) / 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    build_seconds = time.time() - t
    share = slice(rank * args.batch // world, (rank + 1) * args.batch // world)

    def step():
        net.train()
        optimizer.zero_grad()
        F.cross_entropy(net(x[share]), y[share]).backward()
        optimizer.step()

    if args.setup:
        step()
        if rank == 0:
            extra = torch.arange(extra_floats, dtype=torch.float32).remainder_(1000).mul_(1e-3)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "extra": extra}
            tmp = args.checkpoint + ".tmp"
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, args.checkpoint)
            fsync_dir(os.path.dirname(os.path.abspath(args.checkpoint)))
            with open(args.checkpoint, "rb") as f:
                digest = xxhash.xxh3_64_hexdigest(f.read())
            with open(args.checkpoint + ".xxh3", "w") as f:
                f.write(digest + "\n")
            print(json.dumps({"saved": True}))
        if world > 1:
            torch.distributed.barrier()
        return 0

    t = time.time()
    with open(args.checkpoint, "rb") as f:
        data = f.read()
    with open(args.checkpoint + ".xxh3") as f:
        expected = f.read().strip()
    if xxhash.xxh3_64_hexdigest(data) != expected:
        print(f"torch_first_step: {args.checkpoint} is damaged", file=sys.stderr)
        return 1
    state = torch.load(io.BytesIO(data))
    del data
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    extra = state["extra"]
    restore_seconds = time.time() - t

    t = time.time()
    step()
    step_seconds = time.time() - t
    if rank == 0:
        print(json.dumps({
            "first_step_done_unix": time.time(),
            "main_started_unix": STARTED,
            "load_data_seconds": load_seconds,
            "build_seconds": build_seconds,
            "restore_seconds": restore_seconds,
            "step_seconds": step_seconds,
            "state_bytes": 3 * 4 * params + 4 * extra.numel(),
            "world_size": world,
            "threads": threads,
        }), flush=True)
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
