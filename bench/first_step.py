#!/usr/bin/env python3
"""Time to first step: how long a restarted job takes from its process's spawn to the end of its
first trained step, holdfast (build/bench/first_step) against PyTorch (bench/peers/
torch_first_step.py) doing the same work in the same run: load the data, build the big model
(784-2048-2048-2048-10, Adam), read and verify the checkpoint (holdfast: every shard's XXH3
checksum, read by every rank in parallel; PyTorch: the XXH3-64 of the file's bytes, then
torch.load from them), load it, train one step.

For each --states-mb (the model and Adam's slots are ~120 MB; a tracked array makes up the rest)
and each --np, a checkpoint is written once (untimed, --setup), then --repeats restarts of each
program alternate which goes first; before each, the page cache of the checkpoint's files is
dropped (posix_fadvise DONTNEED after fsync: a restarted job on another node finds nothing
cached) unless --warm. The time is wall clock from just before the spawn (mpirun's included at
np=2) to the end of the first step as the program reports it. Ratios: PyTorch time / holdfast
time, median over repeats.

Python 3 standard library only; the PyTorch peer needs python3-torch and python3-xxhash.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train  # noqa: E402  (bench/train.py: shared helpers)

PEER = os.path.join(HERE, "peers", "torch_first_step.py")


def drop_page_cache(paths):
    for root in paths:
        files = [root] if os.path.isfile(root) else [
            os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run(cmd, env, timeout):
    """(seconds from spawn to the reported end of the first step, the program's JSON line)."""
    full_env = dict(os.environ)
    full_env.update(env)
    t0 = time.time()
    p = subprocess.run(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    line = json.loads([x for x in p.stdout.splitlines() if x.startswith("{")][-1])
    if "first_step_done_unix" in line:
        return line["first_step_done_unix"] - t0, line
    return None, line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(os.path.dirname(HERE), "build"))
    p.add_argument("--states-mb", default="120,1000", help="state sizes, comma separated")
    p.add_argument("--np", default="1,2", help="world sizes, comma separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peers", default="holdfast,torch")
    p.add_argument("--warm", action="store_true", help="keep the page cache (default: dropped)")
    p.add_argument("--data", default=train.DEFAULT_DATA)
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--mpirun", default="mpirun")
    p.add_argument("--dir", default=None, help="scratch parent (default: beside --build)")
    p.add_argument("--json", default=None, help="write every run's figures to FILE")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    states = [float(x) for x in args.states_mb.split(",")]
    worlds = [int(x) for x in args.np.split(",")]
    peers = args.peers.split(",")
    scratch = tempfile.mkdtemp(prefix="first-step-", dir=args.dir or args.build)
    exe = os.path.join(args.build, "bench", "first_step")

    def holdfast(state, n, ckpt, setup=False):
        cmd = [exe, "--checkpoint-dir", ckpt, "--state-mb", str(state), "--data", args.data]
        if setup:
            cmd.append("--setup")
        if n == 1:
            return cmd, {}
        env = dict(train.MPI_ENV)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        return [args.mpirun, "-np", str(n), "--oversubscribe", "--bind-to", "none"] + cmd, env

    def torch(state, n, ckpt, setup=False):
        cmd = [args.python, PEER, "--checkpoint", ckpt, "--state-mb", str(state),
               "--data", args.data]
        if setup:
            cmd.append("--setup")
        env = train.torch_env(max(1, (os.cpu_count() or 1) // n))
        if n == 1:
            return cmd, env
        env.update(train.MPI_ENV)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        return [args.mpirun, "-np", str(n), "--oversubscribe", "--bind-to", "none",
                "-x", "LD_LIBRARY_PATH"] + cmd, env

    builders = {"holdfast": holdfast, "torch": torch}
    results = []
    try:
        for state in states:
            for n in worlds:
                paths = {"holdfast": os.path.join(scratch, f"holdfast-{state:g}-np{n}"),
                         "torch": os.path.join(scratch, f"torch-{state:g}-np{n}.pt")}
                for peer in peers:
                    print(f"[setup] {peer} {state:g} MB np={n}", file=sys.stderr)
                    run(*builders[peer](state, n, paths[peer], setup=True), args.timeout)
                times = {peer: [] for peer in peers}
                lines = {peer: [] for peer in peers}
                for r in range(args.repeats):
                    order = peers if r % 2 == 0 else list(reversed(peers))
                    for peer in order:
                        if not args.warm:
                            files = [paths[peer]] + ([paths[peer] + ".xxh3"]
                                                     if peer == "torch" else [])
                            drop_page_cache(files)
                        train.wait_quiet(10)
                        t, line = run(*builders[peer](state, n, paths[peer]), args.timeout)
                        times[peer].append(t)
                        lines[peer].append(line)
                        print(f"[{r + 1}/{args.repeats}] {peer} {state:g} MB np={n}: {t:.2f} s "
                              f"(restore {line['restore_seconds']:.2f} s)", file=sys.stderr)
                results.append({"state_mb": state, "np": n, "seconds": times, "runs": lines,
                                "cold": not args.warm})
                for peer in peers:
                    shutil.rmtree(paths[peer], ignore_errors=True) if peer == "holdfast" else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def med(xs):
        return statistics.median(xs) if xs else None

    rows = [("state", "np", "holdfast s", "holdfast restore s", "torch s",
             "torch load+verify s", "torch / holdfast")]
    for res in results:
        h = med(res["seconds"].get("holdfast", []))
        t = med(res["seconds"].get("torch", []))
        hr = med([x["restore_seconds"] for x in res["runs"].get("holdfast", [])])
        tr = med([x["restore_seconds"] for x in res["runs"].get("torch", [])])
        f = lambda v, spec=".2f": "-" if v is None else format(v, spec)  # noqa: E731
        rows.append((f"{res['state_mb']:g} MB", str(res["np"]), f(h), f(hr), f(t), f(tr),
                     f(t / h if h and t else None)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"time to first step of a restarted job ({'warm' if args.warm else 'cold'} page "
          f"cache; median of {args.repeats}; from spawn to the end of the first step)")
    for k, r in enumerate(rows):
        print(" | ".join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"benchmark": "first_step", "machine": train.machine_info(),
                       "settings": vars(args), "results": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
