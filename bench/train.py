#!/usr/bin/env python3
"""Training throughput: holdfast's fmnist_mlp against the PyTorch peer (bench/peers/torch_mlp.py).

Two models, each trained by both frameworks with the same threads, epochs, samples, batch,
dropout, seed and Adam settings:
  small  784-256-32-10,          batch 50   (the Keras Fashion-MNIST MLP)
  big    784-2048-2048-2048-10,  batch 256  (GEMM-bound)
Every measurement runs --repeats times, alternating holdfast and torch, and the median
samples/s (training samples / training wall seconds, from each run's summary JSON) is
reported with the holdfast/torch ratio and the achieved training GFLOP/s:
  flops/sample = 3 * 2 * sum(in*out over dense layers) - 2 * 784 * first_hidden
(forward, input gradient and weight gradient per layer; the first layer needs no input
gradient). The torch peer runs with the OpenMP OpenBLAS (LD_LIBRARY_PATH); without it torch
gets whichever libblas.so.3 the alternatives system picked (pthread OpenBLAS, which fights
torch's OpenMP threads, or the reference BLAS).

Python 3 standard library only. The table always goes to stdout; --json FILE writes every
raw run, the medians, ratios, machine info, versions and the exact commands.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peers", "torch_mlp.py")
OPENBLAS_OPENMP = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
INPUT, CLASSES = 784, 10
NOISE_WARN = 0.05  # warn when other processes used more than this share of the CPUs


# ---------------------------------------------------------------------------- helpers

def flops_per_sample(hidden):
    widths = [INPUT] + list(hidden) + [CLASSES]
    macs = sum(a * b for a, b in zip(widths, widths[1:]))
    return 3 * 2 * macs - 2 * INPUT * hidden[0]


def cpu_busy_jiffies():
    """Busy jiffies of all CPUs (user+nice+system+irq+softirq+steal) from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except (OSError, ValueError, IndexError):
        return None


def wait_quiet(max_wait, threshold=0.10, window=0.5):
    """Waits (up to max_wait s) until the CPUs are less than `threshold` busy over `window` s.
    Returns the seconds waited, or -1 if the machine never went quiet."""
    t0 = time.monotonic()
    ncpu = os.cpu_count() or 1
    hz = os.sysconf("SC_CLK_TCK")
    while True:
        b0 = cpu_busy_jiffies()
        time.sleep(window)
        b1 = cpu_busy_jiffies()
        if b0 is None or b1 is None or (b1 - b0) / hz / (window * ncpu) < threshold:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= max_wait:
            return -1.0


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_info():
    info = {"nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return info


def holdfast_build_info(build_dir):
    info = {}
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                for key in ("CMAKE_BUILD_TYPE", "CMAKE_CXX_COMPILER", "CMAKE_CXX_FLAGS",
                            "HOLDFAST_NATIVE", "HOLDFAST_BLAS"):
                    if line.startswith(key + ":"):
                        info[key] = line.split("=", 1)[1].strip()
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", HERE, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        info["git_head"] = rev.stdout.strip() if rev.returncode == 0 else None
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10)
        info["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ---------------------------------------------------------------------------- commands

def model_args(m):
    return ["--hidden", ",".join(map(str, m["hidden"])), "--batch", str(m["batch"]),
            "--epochs", str(m["epochs"]), "--train-samples", str(m["samples"])]


def common_args(args, m, summary):
    return (["--data", args.data] + model_args(m) +
            ["--dropout", str(args.dropout), "--optimizer", "adam", "--lr", str(args.lr),
             "--seed", str(args.seed), "--quiet", "--summary-json", summary])


def holdfast_cmd(args, m, summary, threads, layout="on"):
    """Single process, `threads` threads. Environment: unchanged."""
    exe = os.path.join(args.build, "examples", "fmnist_mlp")
    return [exe] + common_args(args, m, summary) + ["--threads", str(threads),
                                                    "--layout-invariant", layout], {}


def torch_cmd(args, m, summary, threads):
    """Single process, `threads` intra-op threads, OpenMP OpenBLAS."""
    cmd = [args.python, PEER] + common_args(args, m, summary) + ["--threads", str(threads)]
    if args.torch_foreach:
        cmd.append("--foreach")
    return cmd, torch_env(threads)


def torch_env(threads):
    env = {"OMP_NUM_THREADS": str(threads)}
    if os.path.isdir(OPENBLAS_OPENMP):
        old = os.environ.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = OPENBLAS_OPENMP + (":" + old if old else "")
    return env


# ---- data parallel: np=1 and np=2 at 1 thread per rank (--np2) --------------------------
# holdfast under mpirun against torch DDP (gloo), the same global batch, so that each
# framework's scaling efficiency np=2 vs np=1 is measured in the same run. For holdfast the
# np=2 run is repeated with the gradient all-reduce overlapped with backward ("on") and
# after it ("off"); the share of all-reduce time hidden is 1 - exposed(on) / exposed(off),
# from exposed_sync_seconds in the summaries.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMP_NUM_THREADS": "1"}


def holdfast_np_cmd(args, m, summary, nproc, overlap="auto", layout="on"):
    exe = os.path.join(args.build, "examples", "fmnist_mlp")
    cmd = ([args.mpirun, "-np", str(nproc), "--oversubscribe", "--bind-to", "none"] +
           [exe] + common_args(args, m, summary) +
           ["--threads", "1", "--overlap", overlap, "--layout-invariant", layout])
    return cmd, dict(MPI_ENV)


def torch_ddp_cmd(args, m, summary, nproc=2):
    cmd = [args.python, PEER] + common_args(args, m, summary) + ["--ddp", "--nproc", str(nproc)]
    if args.torch_foreach:
        cmd.append("--foreach")
    return cmd, torch_env(1)


def variants(args):
    """(name, peer, command builder) in the order they alternate within a repeat."""
    v = []
    compare = "holdfast" in args.peers and args.layout_compare
    if "holdfast" in args.peers:
        v.append(("holdfast", "holdfast", lambda m, s: holdfast_cmd(args, m, s, args.threads)))
    if compare:
        v.append(("holdfast_off", "holdfast",
                  lambda m, s: holdfast_cmd(args, m, s, args.threads, "off")))
    if "torch" in args.peers:
        v.append(("torch", "torch", lambda m, s: torch_cmd(args, m, s, args.threads)))
    if args.np2:
        if "holdfast" in args.peers:
            v.append(("holdfast_np1", "holdfast", lambda m, s: holdfast_cmd(args, m, s, 1)))
            v.append(("holdfast_np2", "holdfast", lambda m, s: holdfast_np_cmd(args, m, s, 2)))
            if compare:
                v.append(("holdfast_np1_off", "holdfast",
                          lambda m, s: holdfast_cmd(args, m, s, 1, "off")))
                v.append(("holdfast_np2_off", "holdfast",
                          lambda m, s: holdfast_np_cmd(args, m, s, 2, "auto", "off")))
            # Overlap exists on the float path only (the exact sum runs after backward).
            v.append(("holdfast_np2_overlap_on", "holdfast",
                      lambda m, s: holdfast_np_cmd(args, m, s, 2, "on", "off")))
            v.append(("holdfast_np2_overlap_off", "holdfast",
                      lambda m, s: holdfast_np_cmd(args, m, s, 2, "off", "off")))
        if "torch" in args.peers:
            v.append(("torch_np1", "torch", lambda m, s: torch_cmd(args, m, s, 1)))
            v.append(("torch_ddp2", "torch", lambda m, s: torch_ddp_cmd(args, m, s)))
    return v


# ---------------------------------------------------------------------------- running

def run_once(cmd, env_over, summary, timeout):
    env = dict(os.environ)
    env.update(env_over)
    if os.path.exists(summary):
        os.remove(summary)
    busy0, child0 = cpu_busy_jiffies(), children_cpu_seconds()
    t0 = time.monotonic()
    try:
        # own process group, so a timeout also ends spawned workers / MPI ranks
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            rc = "timeout"
    except OSError as e:
        rc, err = "oserror", str(e)
    wall = time.monotonic() - t0
    busy1, child1 = cpu_busy_jiffies(), children_cpu_seconds()
    rec = {"returncode": rc, "wall_seconds": wall}
    # CPU time used by processes other than ours while the run lasted, as a share of all CPUs:
    # a noise indicator (this is a 2-core machine that other work may share).
    if busy0 is not None and busy1 is not None and wall > 0:
        hz = os.sysconf("SC_CLK_TCK")
        foreign = (busy1 - busy0) / hz - (child1 - child0)
        rec["foreign_cpu_share"] = max(0.0, foreign / (wall * (os.cpu_count() or 1)))
    if rc != 0:
        rec["stderr_tail"] = err[-2000:]
        return rec
    try:
        with open(summary) as f:
            rec["summary"] = json.load(f)
    except (OSError, ValueError) as e:
        rec["returncode"] = "no-summary"
        rec["stderr_tail"] = (err[-1500:] + f"\nsummary: {e}")
    return rec


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return format(x, spec) if x is not None else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="./build", help="holdfast build dir (default ./build)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON here")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for both frameworks (default: all cores, %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    p.add_argument("--models", default="small,big", help="comma list of small,big")
    p.add_argument("--small-epochs", type=int, default=1)
    p.add_argument("--small-samples", type=int, default=60000)
    p.add_argument("--big-epochs", type=int, default=1)
    p.add_argument("--big-samples", type=int, default=8192)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--peers", default="holdfast,torch",
                   help="comma list of holdfast,torch (e.g. torch alone to test the peer)")
    p.add_argument("--torch-foreach", action="store_true",
                   help="torch Adam with foreach=True (torch 1.13 default on CPU: off)")
    p.add_argument("--python", default="/usr/bin/python3", help="python with torch")
    p.add_argument("--np2", action="store_true",
                   help="also np=1 and np=2 at 1 thread per rank (holdfast under mpirun vs torch "
                        "DDP): scaling efficiency, and holdfast's overlap on/off")
    p.add_argument("--mpirun", default="mpirun")
    p.add_argument("--no-layout-compare", dest="layout_compare", action="store_false",
                   help="skip the --layout-invariant off runs (by default every holdfast setting "
                        "also runs with the opt-out, alternating, for the invariance cost table)")
    p.add_argument("--wait-quiet", type=float, default=30, metavar="S",
                   help="before each run wait up to S seconds for the CPUs to be idle "
                        "(< 10%% busy; other work on the machine skews the numbers); 0: off")
    p.add_argument("--retry-noisy", type=int, default=2, metavar="N",
                   help="rerun a run up to N times when other processes used > 5%% of the "
                        "CPUs during it (default 2)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = p.parse_args(argv)
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    if not args.peers or set(args.peers) - {"holdfast", "torch"}:
        p.error("--peers takes holdfast and/or torch")
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1")

    all_models = {
        "small": {"hidden": [256, 32], "batch": 50,
                  "epochs": args.small_epochs, "samples": args.small_samples},
        "big": {"hidden": [2048, 2048, 2048], "batch": 256,
                "epochs": args.big_epochs, "samples": args.big_samples},
    }
    names = [x.strip() for x in args.models.split(",") if x.strip()]
    if not names or set(names) - set(all_models):
        p.error("--models takes small and/or big")
    models = {n: all_models[n] for n in names}

    exe = os.path.join(args.build, "examples", "fmnist_mlp")
    if "holdfast" in args.peers and not os.access(exe, os.X_OK):
        p.error(f"{exe} not found or not executable (build first, or --peers torch)")
    if not os.path.isdir(OPENBLAS_OPENMP):
        print(f"warning: {OPENBLAS_OPENMP} missing (install libopenblas0-openmp): "
              "torch will use the default libblas.so.3 and be slow", file=sys.stderr)

    vs = variants(args)
    runs = []
    tmp = tempfile.mkdtemp(prefix="holdfast-bench-train-")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t_start = time.monotonic()
    failed = False
    for r in range(args.repeats):
        for mname, m in models.items():
            for vname, peer, build in vs:
                summary = os.path.join(tmp, f"{mname}-{vname}-{r}.json")
                cmd, env_over = build(m, summary)
                for attempt in range(args.retry_noisy + 1):
                    waited = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else 0.0
                    rec = run_once(cmd, env_over, summary, args.timeout)
                    rec.update({"model": mname, "variant": vname, "peer": peer, "repeat": r,
                                "attempt": attempt, "waited_for_quiet_seconds": waited,
                                "command": shlex.join(cmd), "env": env_over})
                    noisy = rec.get("foreign_cpu_share", 0) > NOISE_WARN
                    retry = noisy and "summary" in rec and attempt < args.retry_noisy
                    rec["discarded"] = retry  # superseded by a rerun; not in the medians
                    runs.append(rec)
                    sps = rec.get("summary", {}).get("samples_per_second")
                    print(f"[{r + 1}/{args.repeats}] {mname:5s} {vname:12s} "
                          + (f"{sps:10.0f} samples/s" if sps else f"FAILED ({rec['returncode']})")
                          + (f"  (other load {rec['foreign_cpu_share']:.0%})" if noisy else "")
                          + ("  -> rerun" if retry else ""),
                          file=sys.stderr, flush=True)
                    if not retry:
                        break
                if not sps:
                    failed = True
                    print(rec.get("stderr_tail", ""), file=sys.stderr)

    shutil.rmtree(tmp, ignore_errors=True)  # summaries are kept in `runs`

    # --------------------------------------------------------------- aggregate
    results = {}
    for mname, m in models.items():
        fps = flops_per_sample(m["hidden"])
        res = {"hidden": m["hidden"], "batch": m["batch"], "epochs": m["epochs"],
               "train_samples": m["samples"], "flops_per_sample": fps, "variants": {}}
        for vname, peer, _ in vs:
            mine = [x for x in runs if x["model"] == mname and x["variant"] == vname
                    and not x["discarded"]]
            sums = [x["summary"] for x in mine if "summary" in x]
            sps = [s.get("samples_per_second") for s in sums]
            med = median_or_none(sps)
            res["variants"][vname] = {
                "samples_per_second": [x for x in sps],
                "median_samples_per_second": med,
                "min_samples_per_second": min(sps) if sps else None,
                "max_samples_per_second": max(sps) if sps else None,
                "median_gflops": med * fps / 1e9 if med else None,
                "median_test_accuracy": median_or_none([s.get("test_accuracy") for s in sums]),
                "median_final_train_loss": median_or_none(
                    [s.get("final_train_loss") for s in sums]),
                "steps": sorted({s.get("steps") for s in sums}, key=str),
                "failed_runs": len(mine) - len(sums),
                "noisy_runs": sum(1 for x in mine
                                  if x.get("foreign_cpu_share", 0) > NOISE_WARN),
            }
        v = res["variants"]

        def ratio(a, b):
            x, y = v.get(a, {}).get("median_samples_per_second"), \
                v.get(b, {}).get("median_samples_per_second")
            return x / y if x and y else None
        res["ratio_holdfast_over_torch"] = ratio("holdfast", "torch")
        if args.layout_compare:
            res["ratio_invariant_over_off"] = ratio("holdfast", "holdfast_off")
            if args.np2:
                res["ratio_invariant_over_off_np1"] = ratio("holdfast_np1", "holdfast_np1_off")
                res["ratio_invariant_over_off_np2"] = ratio("holdfast_np2", "holdfast_np2_off")
        if args.np2:
            res["ratio_holdfast_np1_over_torch_np1"] = ratio("holdfast_np1", "torch_np1")
            res["ratio_holdfast_np2_over_torch_ddp2"] = ratio("holdfast_np2", "torch_ddp2")
            # Scaling efficiency: np=2 throughput over twice np=1's, 1 thread per rank.
            for name, one, two in (("holdfast", "holdfast_np1", "holdfast_np2"),
                                   ("torch", "torch_np1", "torch_ddp2")):
                r = ratio(two, one)
                res[f"scaling_efficiency_{name}"] = r / 2 if r else None

            def median_key(vname, key):
                sums = [x["summary"] for x in runs if x["model"] == mname
                        and x["variant"] == vname and not x["discarded"] and "summary" in x]
                return median_or_none([s_.get(key) for s_ in sums])
            on = median_key("holdfast_np2_overlap_on", "exposed_sync_seconds")
            off = median_key("holdfast_np2_overlap_off", "exposed_sync_seconds")
            res["exposed_sync_seconds_overlap_on"] = on
            res["exposed_sync_seconds_overlap_off"] = off
            res["allreduce_share_hidden_by_overlap"] = 1 - on / off if on and off else None
        results[mname] = res

    versions = {}
    for x in runs:
        s = x.get("summary", {})
        if x["peer"] == "torch" and "torch_version" in s:
            versions.update({"torch": s["torch_version"], "numpy": s.get("numpy_version"),
                             "torch_blas": s.get("blas_library")})
        if x["peer"] == "holdfast" and s:
            for k in ("version", "holdfast_version", "git", "compiler"):
                if k in s:
                    versions["holdfast_" + k if not k.startswith("holdfast") else k] = s[k]
    if "holdfast" in args.peers:
        versions["holdfast_build"] = holdfast_build_info(args.build)

    # --------------------------------------------------------------- table
    rows = [("model", "holdfast samples/s", "torch samples/s", "ratio",
             "holdfast GFLOP/s", "torch GFLOP/s")]
    pairs = [("holdfast", "torch", "")]
    if args.np2:
        pairs.append(("holdfast_np1", "torch_np1", " np1x1"))
        pairs.append(("holdfast_np2", "torch_ddp2", " np2x1"))
    for mname, res in results.items():
        for a, b, suffix in pairs:
            va, vb = res["variants"].get(a, {}), res["variants"].get(b, {})
            sa, sb = va.get("median_samples_per_second"), vb.get("median_samples_per_second")
            rows.append((mname + suffix, fmt(sa, ".0f"), fmt(sb, ".0f"),
                         fmt(sa / sb if sa and sb else None, ".2f"),
                         fmt(va.get("median_gflops"), ".1f"), fmt(vb.get("median_gflops"), ".1f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    print(f"train throughput, median of {args.repeats}, {args.threads} threads "
          f"(npN x1 rows: N processes x 1 thread)" if args.np2 else
          f"train throughput, median of {args.repeats}, {args.threads} threads")
    print("\n".join(lines))
    if args.np2:
        print("\nmodel | scaling np2/np1 holdfast | scaling np2/np1 torch | exposed all-reduce s"
              " overlap on / off | share hidden | holdfast np2 samples/s overlap on / off")
        for mname, res in results.items():
            v = res["variants"]
            on_sps = v.get("holdfast_np2_overlap_on", {}).get("median_samples_per_second")
            off_sps = v.get("holdfast_np2_overlap_off", {}).get("median_samples_per_second")
            print(f"{mname} | {fmt(res['scaling_efficiency_holdfast'], '.2f')} | "
                  f"{fmt(res['scaling_efficiency_torch'], '.2f')} | "
                  f"{fmt(res['exposed_sync_seconds_overlap_on'], '.3f')} / "
                  f"{fmt(res['exposed_sync_seconds_overlap_off'], '.3f')} | "
                  f"{fmt(res['allreduce_share_hidden_by_overlap'], '.0%')} | "
                  f"{fmt(on_sps, '.0f')} / {fmt(off_sps, '.0f')}")
    if args.layout_compare and "holdfast" in args.peers:
        print("\nlayout invariance: samples/s with --layout-invariant on (the default) and off, "
              "and the weights' hash of each (equal within a model when invariant)")
        print("model | setting | on samples/s | off samples/s | on / off | on weights_xxh64")
        settings = [("holdfast", "holdfast_off", f"1x{args.threads}")]
        if args.np2:
            settings += [("holdfast_np1", "holdfast_np1_off", "1x1"),
                         ("holdfast_np2", "holdfast_np2_off", "2x1")]
        for mname, res in results.items():
            v = res["variants"]
            for on, off, label in settings:
                a = v.get(on, {}).get("median_samples_per_second")
                b = v.get(off, {}).get("median_samples_per_second")
                hashes = sorted({x["summary"].get("weights_xxh64") for x in runs
                                 if x["model"] == mname and x["variant"] == on
                                 and "summary" in x})
                print(f"{mname} | {label} | {fmt(a, '.0f')} | {fmt(b, '.0f')} | "
                      f"{fmt(a / b if a and b else None, '.2f')} | {','.join(map(str, hashes))}")
    noisy = [x for x in runs
             if x.get("foreign_cpu_share", 0) > NOISE_WARN and not x["discarded"]]
    if noisy:
        kept = sum(1 for x in runs if not x["discarded"])
        print(f"note: {len(noisy)} of {kept} runs shared the CPUs with other processes "
              f"(> {NOISE_WARN:.0%} of CPU time); numbers may be low/noisy")
    if failed:
        print("note: some runs failed (see stderr and the JSON)")

    if args.json:
        out = {
            "benchmark": "train",
            "started_utc": started,
            "total_seconds": time.monotonic() - t_start,
            "settings": {k: getattr(args, k) for k in (
                "threads", "repeats", "dropout", "lr", "seed", "data", "build", "peers",
                "torch_foreach", "np2", "python", "wait_quiet", "retry_noisy",
                "layout_compare")},
            "models": models,
            "machine": machine_info(),
            "versions": versions,
            "results": results,
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
