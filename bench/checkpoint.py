#!/usr/bin/env python3
"""Checkpoint benchmark: holdfast's build/bench/checkpoint at np=1 and np=2 and the PyTorch peer
bench/peers/torch_save.py, alternating, in one combined table.

Each program measures its own figures side by side with its reference in the same process:
  io     save against a raw sequential write + fsync of the same bytes into the same directory
         (+ fsync of the directory), restore/load against a raw read of them, cold (page cache
         dropped with posix_fadvise) and warm; state sizes --sizes-mb (default 10 MB and 1 GB);
         target: save >= 0.8x raw.
  stall  the big model (784-2048-2048-2048-10, batch 256, dropout 0.2, Adam) trained with a save
         every --save-freq steps and without, alternating: per save, the saving step's time
         minus the median step, as a share of the step time, and the run-time overhead.
Ratios are medians of per-repeat ratios of neighbouring runs. This driver runs the programs
--rounds times in rotating order and reports the median over rounds (one round by default:
the programs repeat internally).

Python 3 standard library only; reuses bench/train.py's helpers (CPU noise accounting, machine
info). The table goes to stdout; --json FILE writes every program's full JSON, its command,
environment and the share of CPU time other processes used during it (foreign_cpu_share).
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train  # noqa: E402  (bench/train.py: shared helpers)

PEER = os.path.join(HERE, "peers", "torch_save.py")
TARGET_SAVE_RATIO = 0.8


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return format(x, spec) if x is not None else "-"


def holdfast_cmd(args, nproc, out_json, scratch, asynchronous=False):
    exe = os.path.join(args.build, "bench", "checkpoint")
    # The asynchronous variant only changes saves during training: stall only.
    common = ["--mode", "stall" if asynchronous else args.mode, "--sizes-mb", args.sizes_mb, "--repeats", str(args.repeats),
              "--settle-seconds", str(args.settle_seconds), "--gather-piece-mb", str(args.gather_piece_mb),
              "--steps", str(args.steps), "--save-freq", str(args.save_freq),
              "--stall-repeats", str(args.stall_repeats), "--dir", scratch,
              "--data", args.data, "--quiet", "--json", out_json]
    if args.synthetic:
        common.append("--synthetic")
    if asynchronous:
        common.append("--async-checkpoint")
    if args.save_freq_auto:
        common += ["--save-freq-auto", "--overhead-budget", str(args.overhead_budget)]
    if nproc == 1:
        return [exe] + common, {}
    cmd = [args.mpirun, "-np", str(nproc), "--oversubscribe", "--bind-to", "none", exe] + common
    return cmd, dict(train.MPI_ENV)


def torch_cmd(args, out_json, scratch):
    cmd = [args.python, PEER, "--mode", args.mode, "--sizes-mb", args.sizes_mb,
           "--repeats", str(args.repeats), "--settle-seconds", str(args.settle_seconds),
           "--steps", str(args.steps),
           "--save-freq", str(args.save_freq), "--stall-repeats", str(args.stall_repeats),
           "--threads", str(args.threads), "--dir", scratch, "--data", args.data, "--quiet",
           "--json", out_json]
    if args.synthetic:
        cmd.append("--synthetic")
    return cmd, train.torch_env(args.threads)


def programs(args):
    """(name, peer, builder(out_json, scratch)) in the order they alternate."""
    v = []
    if "holdfast" in args.peers:
        for n in args.np:
            if "io" in args.mode or "sync" in args.saves:
                v.append((f"holdfast_np{n}", "holdfast",
                          lambda o, s, n=n: holdfast_cmd(args, n, o, s)))
            if "stall" in args.mode and "async" in args.saves:
                v.append((f"holdfast_np{n}_async", "holdfast",
                          lambda o, s, n=n: holdfast_cmd(args, n, o, s, asynchronous=True)))
    if "torch" in args.peers:
        v.append(("torch", "torch", lambda o, s: torch_cmd(args, o, s)))
    return v


# ---------------------------------------------------------------------------- aggregation

def io_rows(runs, name):
    """{state MB (rounded): {metric: median over rounds}} for one program."""
    by_size = {}
    for rec in runs:
        if rec["variant"] != name or "summary" not in rec:
            continue
        io = rec["summary"].get("io", [])
        for j in io.get("sizes", []) if isinstance(io, dict) else io:
            by_size.setdefault(round(j["state_bytes"] / 1e6), []).append(j)
    out = {}
    for mb, js in by_size.items():
        keys = set().union(*(j.keys() for j in js))
        out[mb] = {k: median_or_none([j.get(k) for j in js
                                      if isinstance(j.get(k), (int, float))])
                   for k in keys}
        out[mb]["_runs"] = js
    return out


def stall_rows(runs, name):
    """[(label, {metric: median over rounds})] for one program."""
    stalls = [rec["summary"]["stall"] for rec in runs
              if rec["variant"] == name and "summary" in rec and "stall" in rec["summary"]]
    if not stalls:
        return []
    keys = ("median_step_ms", "mean_step_ms", "mean_save_step_ms", "stall_ms_per_save",
            "stall_share_of_step", "overhead_share_from_stall", "overhead_share_measured",
            "stall_over_memcpy", "async_waits")
    if "variants" in stalls[0]:  # torch: one row per save variant
        rows = []
        for v in stalls[0]["variants"]:
            if v == "none":
                continue
            rows.append((f"{name} {v}", {k: median_or_none([s["variants"][v].get(k)
                                                            for s in stalls]) for k in keys},
                         stalls[0]))
        return rows
    return [(name, {k: median_or_none([s.get(k) for s in stalls]) for k in keys}, stalls[0])]


def table(rows, first_left=True):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) if (i == 0 and first_left) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="./build", help="holdfast build dir (default ./build)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON here")
    p.add_argument("--mode", default="io,stall", help="what to measure: io, stall (default both)")
    p.add_argument("--np", default="1,2", help="holdfast world sizes (default 1,2)")
    p.add_argument("--sizes-mb", default="10,1000", help="io state sizes in MB (default 10,1000)")
    p.add_argument("--repeats", type=int, default=6,
                   help="io repeats inside each program (even: as many of each order)")
    p.add_argument("--settle-seconds", type=float, default=3,
                   help="io: rest before every timed operation (see bench/README.md)")
    p.add_argument("--gather-piece-mb", type=float, default=16,
                   help="io, holdfast: RestoreOptions::gather_piece_bytes in MiB (default 16)")
    p.add_argument("--steps", type=int, default=60, help="stall: steps per training run")
    p.add_argument("--save-freq", type=int, default=10, help="stall: save every N steps")
    p.add_argument("--save-freq-auto", action="store_true",
                   help="stall, holdfast: save as often as --overhead-budget allows "
                        "(save_freq = auto) instead of every --save-freq steps")
    p.add_argument("--overhead-budget", type=float, default=0.035,
                   help="stall, with --save-freq-auto: the share of run time saves may cost")
    p.add_argument("--stall-repeats", type=int, default=3,
                   help="stall: pairs of runs with and without saves inside each program")
    p.add_argument("--saves", default="sync,async",
                   help="stall, holdfast: which saves to measure, sync and/or async (default both)")
    p.add_argument("--rounds", type=int, default=1,
                   help="times each program runs, rotating their order (median over rounds)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch intra-op threads (holdfast: cores / ranks, as fmnist_mlp)")
    p.add_argument("--peers", default="holdfast,torch", help="comma list of holdfast,torch")
    p.add_argument("--data", default=train.DEFAULT_DATA)
    p.add_argument("--synthetic", action="store_true", help="stall: random data")
    p.add_argument("--python", default="/usr/bin/python3", help="python with torch")
    p.add_argument("--mpirun", default="mpirun")
    p.add_argument("--dir", help="where the programs write (default: a fresh directory in the "
                                 "build dir, removed at the end); must be the file system to test")
    p.add_argument("--quick", action="store_true",
                   help="small and fast: 10 MB, 2 repeats, 30 steps, 1 stall repeat, 0.5 s settle, "
                        "unless given")
    p.add_argument("--wait-quiet", type=float, default=30, metavar="S",
                   help="before each program wait up to S seconds for the CPUs to be idle; 0: off")
    p.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                   help="rerun a program up to N times when other processes used > 5%% of the "
                        "CPUs during it (default 0: long runs; the table flags noisy ones)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per program run")
    args = p.parse_args(argv)
    if args.quick:  # only where the flag was not given
        quick = {"sizes_mb": "10", "repeats": 2, "steps": 30, "stall_repeats": 1,
                 "settle_seconds": 0.5}
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in quick.items():
            if "--" + key.replace("_", "-") not in given:
                setattr(args, key, value)
    modes = [x.strip() for x in args.mode.split(",") if x.strip()]
    if not modes or set(modes) - {"io", "stall"}:
        p.error("--mode takes io and/or stall")
    args.mode = ",".join(modes)
    args.saves = [x.strip() for x in args.saves.split(",") if x.strip()]
    if not args.saves or set(args.saves) - {"sync", "async"}:
        p.error("--saves takes sync and/or async")
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    if not args.peers or set(args.peers) - {"holdfast", "torch"}:
        p.error("--peers takes holdfast and/or torch")
    try:
        args.np = [int(x) for x in args.np.split(",") if x.strip()]
        [float(x) for x in args.sizes_mb.split(",")]
    except ValueError as e:
        p.error(str(e))
    if (min(args.np, default=0) < 1 or args.repeats < 1 or args.rounds < 1 or args.steps < 1
            or args.save_freq < 1 or args.stall_repeats < 1):
        p.error("counts must be >= 1")
    exe = os.path.join(args.build, "bench", "checkpoint")
    if "holdfast" in args.peers and not os.access(exe, os.X_OK):
        p.error(f"{exe} not found (build the bench_checkpoint target, or --peers torch)")

    scratch_parent = args.dir or args.build
    scratch = tempfile.mkdtemp(prefix="checkpoint-bench-", dir=scratch_parent)
    tmp = tempfile.mkdtemp(prefix="holdfast-bench-checkpoint-")
    progs = programs(args)
    runs = []
    failed = False
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t_start = time.monotonic()
    try:
        for r in range(args.rounds):
            order = progs[r % len(progs):] + progs[:r % len(progs)]
            for name, peer, build in order:
                out_json = os.path.join(tmp, f"{name}-{r}.json")
                cmd, env_over = build(out_json, scratch)
                for attempt in range(args.retry_noisy + 1):
                    waited = train.wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else 0.0
                    print(f"[{r + 1}/{args.rounds}] {name} ...", file=sys.stderr, flush=True)
                    rec = train.run_once(cmd, env_over, out_json, args.timeout)
                    rec.update({"variant": name, "peer": peer, "round": r, "attempt": attempt,
                                "waited_for_quiet_seconds": waited,
                                "command": shlex.join(cmd), "env": env_over})
                    noisy = rec.get("foreign_cpu_share", 0) > train.NOISE_WARN
                    retry = noisy and "summary" in rec and attempt < args.retry_noisy
                    rec["discarded"] = retry
                    runs.append(rec)
                    print(f"[{r + 1}/{args.rounds}] {name} "
                          + (f"done in {rec['wall_seconds']:.0f} s" if "summary" in rec
                             else f"FAILED ({rec['returncode']})")
                          + (f"  (other load {rec['foreign_cpu_share']:.0%})" if noisy else "")
                          + ("  -> rerun" if retry else ""), file=sys.stderr, flush=True)
                    if not retry:
                        break
                if "summary" not in rec:
                    failed = True
                    print(rec.get("stderr_tail", ""), file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    kept = [x for x in runs if not x["discarded"]]

    # --------------------------------------------------------------- tables
    names = [n for n, _, _ in progs]
    io = {n: io_rows(kept, n) for n in names}
    sizes = sorted({mb for n in names for mb in io[n]})
    rows = [("state", "program", "save GB/s", "raw write GB/s", "save/raw",
             f">= {TARGET_SAVE_RATIO}", "restore cold GB/s", "raw read cold GB/s",
             "restore/raw cold", "restore warm GB/s", "raw read warm GB/s", "restore/raw warm",
             "restore/(raw+allgather) cold", "warm")]
    for mb in sizes:
        for n in names:
            j = io[n].get(mb)
            if not j:
                continue
            torch_ = n == "torch"
            ratio = j.get("save_over_raw")
            rows.append((f"{mb} MB", n if not torch_ else "torch.save/load",
                         fmt(j.get("save_gbps"), ".2f"), fmt(j.get("raw_write_gbps"), ".2f"),
                         fmt(ratio, ".2f"),
                         "-" if ratio is None else ("yes" if ratio >= TARGET_SAVE_RATIO else "NO"),
                         fmt(j.get("restore_cold_gbps", j.get("load_cold_gbps")), ".2f"),
                         fmt(j.get("raw_read_cold_gbps"), ".2f"),
                         fmt(j.get("restore_cold_over_raw", j.get("load_cold_over_raw")), ".2f"),
                         fmt(j.get("restore_warm_gbps", j.get("load_warm_gbps")), ".2f"),
                         fmt(j.get("raw_read_warm_gbps"), ".2f"),
                         fmt(j.get("restore_warm_over_raw", j.get("load_warm_over_raw")), ".2f"),
                         fmt(j.get("restore_cold_over_mirrored_raw"), ".2f"),
                         fmt(j.get("restore_warm_over_mirrored_raw"), ".2f")))
    if len(rows) > 1:
        print(f"checkpoint I/O against raw sequential I/O of the same bytes, same directory "
              f"({args.repeats} repeats per program alternating which goes first, "
              f"{args.settle_seconds:g} s rest before each operation; GB/s: medians, GB = 1e9 "
              f"bytes; ratios: raw time / holdfast time, geometric mean of the two orders' "
              f"medians)")
        print(table(rows))
        print("raw write = write loop + fsync + fsync dir; cold = page cache dropped with "
              "posix_fadvise(DONTNEED) (the hypervisor may still cache); holdfast's restore "
              "has each rank read its share of the shards and all-gathers the state; the raw "
              "read has each rank read its share only, and raw+allgather adds the MPI_Allgatherv "
              "that gives every rank the whole state (what a mirrored restore needs).")

    # Where holdfast's save time goes (chief, median ms), from the timing Env.
    brows = [("state", "program", "op", "total", "shard write", "shard fsync", "shard read",
              "meta files", "dir fsyncs", "dir ops", "CPU etc")]
    for mb in sizes:
        for n in names:
            if n == "torch" or mb not in io[n]:
                continue
            js = io[n][mb]["_runs"]
            for op, key in (("raw write", "raw_write_breakdown_chief"),
                            ("save", "save_breakdown_chief"),
                            ("restore cold", "restore_breakdown_chief")):
                b = {k: median_or_none([j.get(key, {}).get(k) for j in js])
                     for k in ("total", "shard_write", "shard_fsync", "shard_read", "meta_files",
                               "dir_fsync", "dir_ops", "not_file_system")}
                ms = {k: (v * 1e3 if v is not None else None) for k, v in b.items()}
                brows.append((f"{mb} MB", n, op, fmt(ms["total"], ".1f"),
                              fmt(ms["shard_write"], ".1f"), fmt(ms["shard_fsync"], ".1f"),
                              fmt(ms["shard_read"], ".1f"), fmt(ms["meta_files"], ".1f"),
                              fmt(ms["dir_fsync"], ".1f"), fmt(ms["dir_ops"], ".1f"),
                              fmt(ms["not_file_system"], ".1f")))
    if len(brows) > 1:
        print("\nwhere holdfast's time goes on rank 0 (median ms; CPU etc = total minus "
              "file-system calls: encoding, hashing, copies, JSON, collectives)")
        print(table(brows))

    srows = [("program", "step ms", "mean step ms", "save step ms", "stall ms/save",
              "stall/step", "overhead from stall" if args.save_freq_auto else f"overhead (1 save/{args.save_freq} steps)", "overhead measured",
              "stall/memcpy", "waits")]
    stall_info = None
    for n in names:
        for label, s, raw in stall_rows(kept, n):
            stall_info = stall_info or raw
            srows.append((label, fmt(s["median_step_ms"], ".1f"), fmt(s["mean_step_ms"], ".1f"),
                          fmt(s["mean_save_step_ms"], ".1f"), fmt(s["stall_ms_per_save"], ".1f"),
                          fmt(s["stall_share_of_step"], ".2f"),
                          fmt(s["overhead_share_from_stall"] and
                              s["overhead_share_from_stall"] * 100, ".1f") + "%",
                          fmt(s["overhead_share_measured"] and
                              s["overhead_share_measured"] * 100, ".1f") + "%",
                          fmt(s.get("stall_over_memcpy"), ".2f"), fmt(s.get("async_waits"), ".0f")))
    if len(srows) > 1:
        print(f"\ntraining stall per save: 784-2048-2048-2048-10, batch 256, dropout 0.2, Adam, "
              f"{stall_info['state_bytes'] / 1e6:.0f} MB of state, "
              + (f"holdfast saving as often as a {args.overhead_budget * 100:.1f}% budget allows "
                 f"(save_freq auto)" if args.save_freq_auto else
                 f"save every {args.save_freq} steps")
              + f", {args.steps} steps per run (median of {args.stall_repeats})")
        print(table(srows))
        print("save step = mean time of the steps that saved; stall = that minus the median "
              "other step of the same run; stall/memcpy = that over copying the rank's share of the "
              "state once in memory (async target <= 1.5); waits = async saves that waited for the "
              "previous one; overhead = stall / "
              f"({args.save_freq} x median step); measured = run time with saves / without - 1. "
              "holdfast npN: N ranks x cores/N threads; torch: 1 process x --threads. torch save: "
              "no fsync; save_fsync: + fsync file and dir; save_atomic: tmp + fsync + rename + "
              "fsync dir (holdfast's guarantees).")

    noisy = [x for x in kept if x.get("foreign_cpu_share", 0) > train.NOISE_WARN]
    if noisy:
        print(f"note: {len(noisy)} of {len(kept)} program runs shared the CPUs with other "
              f"processes (" + ", ".join(f"{x['variant']} {x['foreign_cpu_share']:.0%}"
                                         for x in noisy) + "); numbers may be low/noisy")
    if failed:
        print("note: some runs failed (see stderr and the JSON)")

    if args.json:
        versions = {}
        for x in kept:
            s = x.get("summary", {})
            if x["peer"] == "torch" and "torch_version" in s:
                versions["torch"] = s["torch_version"]
                versions["torch_blas"] = s.get("blas_library")
            if x["peer"] == "holdfast" and "holdfast_version" in s:
                versions["holdfast"] = s["holdfast_version"]
        if "holdfast" in args.peers:
            versions["holdfast_build"] = train.holdfast_build_info(args.build)
        out = {
            "benchmark": "checkpoint",
            "started_utc": started,
            "total_seconds": time.monotonic() - t_start,
            "settings": {k: getattr(args, k) for k in (
                "mode", "np", "sizes_mb", "repeats", "settle_seconds", "steps", "save_freq",
                "stall_repeats", "rounds", "threads", "peers", "data", "synthetic", "build",
                "python", "wait_quiet", "retry_noisy")},
            "target_save_over_raw": TARGET_SAVE_RATIO,
            "machine": train.machine_info(),
            "versions": versions,
            "io": {n: {str(mb): {k: v for k, v in j.items() if k != "_runs"}
                       for mb, j in io[n].items()} for n in names},
            "stall": {label: s for n in names for label, s, _ in stall_rows(kept, n)},
            "runs": runs,
        }
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
