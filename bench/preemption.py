#!/usr/bin/env python3
"""Preemption latency: from a signal to the committed checkpoint and to the job's exit.

Runs build/examples/fmnist_mlp under `mpirun -np N` with --backup-dir, waits until it is
training (its first checkpoint is committed), sends SIGUSR1 (what SLURM's --signal and
`holdfast launch` deliver) to one rank, and measures on one clock:
  commit  signal -> LATEST names the checkpoint of the preemption step
  exit    signal -> mpirun has exited (code 75 expected)
for the small model (784-256-32-10, batch 50) and the big one (784-2048x3-10, batch 256,
10.6M parameters: a 127 MB checkpoint with Adam's slots), at np = 1 and 2, --repeats times,
and reports the median and worst case beside the reference: a default SLURM's grace before
SIGKILL (KillWait = 30 s). Also reported: the model's mean step time (from an unpreempted run
of the same configuration) and the checkpoint's size, since the latency is at most the rest
of the step in progress, one more step and one checkpoint write.

Python 3 standard library only; prints a table, --json FILE writes every raw run.
"""

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SLURM_KILLWAIT = 30.0  # seconds, SLURM's default between TERM and KILL

MODELS = {
    "small": ["--hidden", "256,32", "--batch", "50", "--train-samples", "60000"],
    "big": ["--hidden", "2048,2048,2048", "--batch", "256", "--train-samples", "16384"],
}


def ranks_of(mpirun_pid):
    """Pids of fmnist_mlp processes descended from mpirun_pid (from /proc)."""
    parent, name = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)], name[int(entry)] = int(fields[1]), comm
    out = []
    for pid, comm in name.items():
        p = parent.get(pid)
        while p and p > 1:
            if p == mpirun_pid:
                if comm == "fmnist_mlp":
                    out.append(pid)
                break
            p = parent.get(p)
    return sorted(out)


def read_latest(backup):
    try:
        with open(os.path.join(backup, "LATEST")) as f:
            return f.read().strip()
    except OSError:
        return ""


def base_command(args, np_, model, extra):
    cmd = [args.mpirun, "--oversubscribe", "-np", str(np_), args.program, "--quiet",
           "--threads", str(args.threads), "--epochs", "50"] + MODELS[model] + extra
    return cmd


def step_time(args, np_, model):
    """Mean seconds per step of an unpreempted 1-epoch run."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "s.json")
        cmd = base_command(args, np_, model, ["--summary-json", summary])
        cmd[cmd.index("--epochs") + 1] = "1"
        subprocess.run(cmd, env=args.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(summary) as f:
            s = json.load(f)
        return s["train_seconds"] / s["steps"]


def one_run(args, np_, model, workdir):
    backup = os.path.join(workdir, "backup")
    cmd = base_command(args, np_, model, ["--backup-dir", backup, "--save-freq", "20"])
    job = subprocess.Popen(cmd, env=args.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.monotonic() + 120
    while read_latest(backup) == "" and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.01)
    first = read_latest(backup)
    if not first:
        job.kill()
        raise RuntimeError("no checkpoint within 120 s: " + (job.communicate()[0] or ""))
    time.sleep(args.settle)  # mid-training, away from the periodic save
    ranks = ranks_of(job.pid)
    if len(ranks) != np_:
        job.kill()
        raise RuntimeError(f"found {len(ranks)} ranks, expected {np_}")
    before = read_latest(backup)
    t0 = time.monotonic()
    os.kill(ranks[-1], signal.SIGUSR1)
    commit = None
    while job.poll() is None:
        if commit is None and read_latest(backup) not in ("", before):
            commit = time.monotonic() - t0
        time.sleep(0.0005)
    exited = time.monotonic() - t0
    out = job.stdout.read()
    if commit is None and read_latest(backup) not in ("", before):
        commit = exited  # committed between two polls just before the exit
    found = re.search(r"preempted: checkpoint committed at step (\d+)", out)
    step = int(found.group(1)) if found else None
    if job.returncode != 75 or step is None:
        raise RuntimeError(f"exit {job.returncode}, expected 75:\n{out}")
    ckpt = os.path.join(backup, read_latest(backup))
    size = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt))
    return {"commit_seconds": commit, "exit_seconds": exited, "step": step,
            "checkpoint_bytes": size, "exit_code": job.returncode}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build")
    p.add_argument("--np", default="1,2", help="comma-separated world sizes")
    p.add_argument("--models", default="small,big")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="threads per rank")
    p.add_argument("--settle", type=float, default=0.3,
                   help="seconds after the first checkpoint before the signal")
    p.add_argument("--workdir", default=None, help="where checkpoints go (default: a temp dir "
                   "under the build directory, same filesystem as a user's run)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.program = os.path.join(args.build, "examples", "fmnist_mlp")
    args.mpirun = "mpirun"
    args.env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                    OMP_NUM_THREADS=str(args.threads))
    base = args.workdir or args.build
    results = []
    for model in args.models.split(","):
        for np_ in [int(x) for x in args.np.split(",")]:
            st = step_time(args, np_, model)
            runs = []
            for r in range(args.repeats):
                with tempfile.TemporaryDirectory(dir=base, prefix="bench-preempt-") as work:
                    runs.append(one_run(args, np_, model, work))
                print(f"  {model} np={np_} run {r + 1}: commit {runs[-1]['commit_seconds']:.3f} s,"
                      f" exit {runs[-1]['exit_seconds']:.3f} s", file=sys.stderr)
            commits = [x["commit_seconds"] for x in runs]
            exits = [x["exit_seconds"] for x in runs]
            results.append({
                "model": model, "np": np_, "step_seconds": st,
                "checkpoint_bytes": runs[0]["checkpoint_bytes"],
                "commit_median": statistics.median(commits), "commit_max": max(commits),
                "exit_median": statistics.median(exits), "exit_max": max(exits),
                "exit_max_over_killwait": max(exits) / SLURM_KILLWAIT, "runs": runs})

    print(f"\nsignal (SIGUSR1 to one rank) -> committed checkpoint -> exit 75; "
          f"median and worst of {args.repeats}; reference: SLURM KillWait {SLURM_KILLWAIT:.0f} s")
    print(f"| model | np | step | checkpoint | to commit (median / max) | to exit (median / max) "
          f"| worst exit / KillWait |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['np']} | {r['step_seconds'] * 1000:.1f} ms "
              f"| {r['checkpoint_bytes'] / 1e6:.1f} MB "
              f"| {r['commit_median']:.3f} / {r['commit_max']:.3f} s "
              f"| {r['exit_median']:.3f} / {r['exit_max']:.3f} s "
              f"| {r['exit_max_over_killwait'] * 100:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                       "reference_killwait_seconds": SLURM_KILLWAIT, "results": results,
                       "argv": sys.argv}, f, indent=2)


if __name__ == "__main__":
    main()
