#!/usr/bin/python3
"""PyTorch reference for bench/checkpoint: torch.save against raw file I/O, and the training
stall per torch.save, measured the same way as holdfast's bench/checkpoint.

io: for each state size, a dict of three flat float32 tensors (params and Adam's m and v, as
holdfast's blobs) of that many bytes in total. Each repeat, in alternating order:
  torch.save  torch.save(state, f) into an open file, flush, fsync, fsync the directory;
  raw         the same tensors' bytes written straight from memory with one sequential write
              loop, fsync, fsync the directory.
Then, with both files' pages dropped from the page cache (posix_fadvise DONTNEED after the
fsync), torch.load against reading the raw file back into the tensors (cold), and both again
(warm). Medians over repeats; ratios are medians of per-repeat raw time / torch time.

stall: the big model (784-2048-2048-2048-10, ReLU, dropout 0.2, Adam 1e-3 with Keras' eps,
batch 256, as bench/peers/torch_mlp.py) trained for --steps steps, saving
{"model": state_dict, "optimizer": state_dict} every --save-freq steps, in these variants,
rotating their order every repeat:
  none         no saves (the baseline)
  save         torch.save(obj, path): overwrites in place, no fsync (what most scripts do;
               neither durable nor atomic)
  save_fsync   torch.save into an open file, flush, fsync, fsync the directory (durable, not
               atomic: a crash mid-save leaves a torn file)
  save_atomic  torch.save to path.tmp, fsync, rename onto path, fsync the directory (durable
               and atomic: holdfast's guarantees, minus the checksums)
Per save: the step's wall time (between consecutive step ends) minus the median step time.

Run with Debian's torch and the OpenMP OpenBLAS:
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 torch_save.py ...
"""

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_mlp import DEFAULT_DATA, blas_library, build_model, load_split  # noqa: E402

VARIANTS = ("none", "save", "save_fsync", "save_atomic")


# ---------------------------------------------------------------------------- helpers

def cpu_sample():
    """(machine busy CPU seconds from /proc/stat, this process's CPU seconds, wall)."""
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF)
    return busy, r.ru_utime + r.ru_stime, time.monotonic()


def foreign_share(since):
    """Share of all CPUs used by other processes (and kernel threads) since `since`."""
    busy0, self0, t0 = since
    busy1, self1, t1 = cpu_sample()
    if busy0 is None or busy1 is None or t1 <= t0:
        return None
    return max(0.0, ((busy1 - busy0) - (self1 - self0)) / ((t1 - t0) * (os.cpu_count() or 1)))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def syncfs(path):
    """syncfs(2) of the file system holding `path` (os.sync() where libc has none)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            os.sync()
    except AttributeError:
        os.sync()
    finally:
        os.close(fd)


def byte_view(t):
    return memoryview(t.numpy()).cast("B")


def write_all(fd, view):
    while len(view):
        n = os.write(fd, view)
        view = view[n:]


def read_all(fd, view):
    while len(view):
        n = os.readv(fd, [view])
        if n <= 0:
            raise OSError("short read")
        view = view[n:]


def torch_save_durable(obj, path):
    """torch.save into an open file, then flush, fsync and fsync the directory."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(os.path.dirname(path))


def torch_save_atomic(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


# ---------------------------------------------------------------------------- io

def io_one_size(args, mb, scratch):
    floats = max(16, int(mb * 1e6 / 12))
    gen = torch.Generator()
    gen.manual_seed(7)
    state = {"params": torch.rand(floats, generator=gen) - 0.5}
    state["m"] = state["params"] * 0.5
    state["v"] = state["params"] * 0.25
    tensors = list(state.values())
    state_bytes = sum(t.numel() * t.element_size() for t in tensors)
    ref = [t.clone() for t in tensors]
    rec = {k: [] for k in ("save", "raw_write", "load_cold", "raw_read_cold", "load_warm",
                           "raw_read_warm")}
    # raw time / torch time, keyed by which of the two ran first (odd repeats: torch)
    ratios = {k: {"torch_first": [], "raw_first": []} for k in ("save", "load_cold", "load_warm")}
    file_bytes = None
    cpu0 = cpu_sample()
    for r in range(args.repeats + 1):  # repeat 0 warms up, not recorded
        d = os.path.join(scratch, f"rep-{r}")
        os.makedirs(d)
        ckpt, raw = os.path.join(d, "state.pt"), os.path.join(d, "raw.bin")

        def do_save():
            time.sleep(args.settle_seconds)
            t0 = time.perf_counter()
            torch_save_durable(state, ckpt)
            return time.perf_counter() - t0

        def do_raw():
            time.sleep(args.settle_seconds)
            t0 = time.perf_counter()
            fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for t in tensors:
                    write_all(fd, byte_view(t))
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(d)
            return time.perf_counter() - t0

        def do_load():
            time.sleep(args.settle_seconds)
            t0 = time.perf_counter()
            loaded = torch.load(ckpt)
            t = time.perf_counter() - t0
            if not all(torch.equal(a, loaded[k]) for a, k in zip(ref, state)):
                raise RuntimeError("torch.load gave other tensors than were saved")
            return t

        def do_raw_read():
            for t in tensors:
                t[0] += 1.0
            time.sleep(args.settle_seconds)
            t0 = time.perf_counter()
            fd = os.open(raw, os.O_RDONLY)
            try:
                for t in tensors:
                    read_all(fd, byte_view(t))
            finally:
                os.close(fd)
            t = time.perf_counter() - t0
            if not all(torch.equal(a, b) for a, b in zip(ref, tensors)):
                raise RuntimeError("raw read gave other bytes than were written")
            return t

        if r % 2:
            t_save, t_raw = do_save(), do_raw()
        else:
            t_raw, t_save = do_raw(), do_save()
        file_bytes = os.path.getsize(ckpt)
        drop_cache(ckpt)
        drop_cache(raw)
        if r % 2:
            t_lc, t_rc = do_load(), do_raw_read()
            t_rw, t_lw = do_raw_read(), do_load()
        else:
            t_rc, t_lc = do_raw_read(), do_load()
            t_lw, t_rw = do_load(), do_raw_read()
        shutil.rmtree(d)
        syncfs(scratch)  # let the file system settle the removal before the next write
        if r == 0:
            continue
        for k, v in (("save", t_save), ("raw_write", t_raw), ("load_cold", t_lc),
                     ("raw_read_cold", t_rc), ("load_warm", t_lw), ("raw_read_warm", t_rw)):
            rec[k].append(v)
        order = "torch_first" if r % 2 else "raw_first"
        for k, v in (("save", t_raw / t_save), ("load_cold", t_rc / t_lc),
                     ("load_warm", t_rw / t_lw)):
            ratios[k][order].append(v)
    gb = state_bytes / 1e9
    out = {"target_mb": mb, "state_bytes": state_bytes, "file_bytes": file_bytes,
           "repeats": args.repeats, "settle_seconds": args.settle_seconds,
           "foreign_cpu_share": foreign_share(cpu0)}
    for k in ("save", "raw_write", "load_cold", "raw_read_cold", "load_warm", "raw_read_warm"):
        out[k + "_seconds"] = rec[k]
        out[k + "_gbps"] = gb / median(rec[k])
    # The second of two operations was systematically slower here (see bench/checkpoint/io_mode.cc):
    # geometric mean of the medians of the two orders, so the order effect cancels.
    for k, by_order in ratios.items():
        a, b = median(by_order["torch_first"]), median(by_order["raw_first"])
        out[k + "_over_raw"] = (a * b) ** 0.5 if a and b else (a or b)
        out[k + "_over_raw_by_order"] = by_order
    return out


# ---------------------------------------------------------------------------- stall

def stall(args, scratch):
    torch.manual_seed(args.seed)
    samples = args.steps * args.batch
    x = y = None
    source = "synthetic"
    if not args.synthetic:
        x, y = load_split(args.data, "train", samples)
        source = args.data
    if x is None or len(x) < samples:
        g = torch.Generator()
        g.manual_seed(1)
        x = torch.rand(samples, 784, generator=g)
        y = torch.arange(samples) % 10
        if not args.synthetic:
            source += " (too few samples: synthetic used)"
    model = build_model(args.hidden, args.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    state_bytes = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    path = os.path.join(scratch, "stall.pt")

    def save(variant):
        obj = {"model": model.state_dict(), "optimizer": opt.state_dict()}
        if variant == "save":
            torch.save(obj, path)
        elif variant == "save_fsync":
            torch_save_durable(obj, path)
        else:
            torch_save_atomic(obj, path)

    gen = torch.Generator()
    gen.manual_seed(args.seed)
    step_count = [0]

    def train_once(variant, steps):
        perm = torch.randperm(len(x), generator=gen)
        times, saved = [], []
        cpu0 = cpu_sample()
        last = time.perf_counter()
        for s in range(steps):
            idx = perm[(s * args.batch) % len(x):][:args.batch]
            logits = model(x.index_select(0, idx))
            loss = F.cross_entropy(logits, y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_count[0] += 1
            did = variant != "none" and step_count[0] % args.save_freq == 0
            if did:
                save(variant)
            now = time.perf_counter()
            times.append(now - last)
            saved.append(did)
            last = now
        if os.path.exists(path):
            os.remove(path)
        return {"step_seconds": times, "saved": saved, "foreign_cpu_share": foreign_share(cpu0)}

    if not args.quiet:
        print("torch_save: stall warm-up", file=sys.stderr, flush=True)
    train_once("save_fsync", min(args.steps, args.save_freq + 2))
    variants = [v for v in VARIANTS if v in args.variants]
    runs = []
    per = {v: {"base_ms": [], "mean_ms": [], "save_step_ms": [], "stall_ms": [], "share": [],
               "total": [], "foreign": []} for v in variants}
    for r in range(args.stall_repeats):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        res = {}
        for v in order:
            if not args.quiet:
                print(f"torch_save: stall repeat {r + 1}, {v}", file=sys.stderr, flush=True)
            res[v] = train_once(v, args.steps)
        base_run = res.get("none")
        for v in variants:
            run = res[v]
            t, sv = run["step_seconds"], run["saved"]
            steady = [t[i] for i in range(1, len(t)) if not sv[i]]
            base_v = median(steady)
            base = median([base_run["step_seconds"][i]
                           for i in range(1, len(base_run["step_seconds"]))]) \
                if base_run else base_v
            saves = [t[i] for i in range(1, len(t)) if sv[i]]
            stalls = [s - base_v for s in saves]
            mean_stall = sum(stalls) / len(stalls) if stalls else None
            p = per[v]
            p["base_ms"].append(base_v * 1e3)
            p["mean_ms"].append(sum(steady) / len(steady) * 1e3 if steady else None)
            p["save_step_ms"].append(sum(saves) / len(saves) * 1e3 if saves else None)
            p["stall_ms"].append(mean_stall * 1e3 if mean_stall is not None else None)
            p["share"].append(mean_stall / base if mean_stall is not None else None)
            p["total"].append(sum(t[1:]))
            p["foreign"].append(run["foreign_cpu_share"])
            runs.append({"repeat": r, "variant": v, **run})
    results = {}
    none_total = per["none"]["total"] if "none" in per else None
    for v in variants:
        p = per[v]
        overhead = ([a / b - 1 for a, b in zip(p["total"], none_total)]
                    if none_total and v != "none" else [])
        share = median(p["share"])
        results[v] = {
            "median_step_ms": median(p["base_ms"]),
            "mean_step_ms": median(p["mean_ms"]),
            "mean_save_step_ms": median(p["save_step_ms"]),
            "stall_ms_per_save": median(p["stall_ms"]),
            "stall_share_of_step": share,
            "overhead_share_from_stall": share / args.save_freq if share is not None else None,
            "overhead_share_measured": median(overhead),
            "total_seconds": p["total"],
            "foreign_cpu_share": p["foreign"],
        }
    return {"hidden": args.hidden, "batch": args.batch, "dropout": args.dropout,
            "optimizer": "adam(lr=1e-3,beta1=0.9,beta2=0.999,eps=1e-7)", "data": source,
            "threads": torch.get_num_threads(), "steps_per_run": args.steps,
            "save_freq": args.save_freq, "repeats": args.stall_repeats,
            "state_bytes": state_bytes, "variants": results, "runs": runs}


# ---------------------------------------------------------------------------- output

def fmt(x, spec):
    """format(x, spec), or a dash as wide as the spec asks for when x is None."""
    if x is not None:
        return format(x, spec)
    width = spec.split(".")[0]
    return "-".rjust(int(width) if width.isdigit() else 1)


def print_tables(out):
    if "io" in out:
        print("\ntorch.save I/O, 1 process, median of "
              f"{out['io'][0]['repeats'] if out['io'] else 0} (GB = 1e9 bytes of state; ratios: "
              "raw time / torch time, geometric mean of the two orders' medians)")
        print("save = torch.save + flush + fsync + fsync dir; raw = write loop + fsync + fsync "
              "dir, same bytes, same directory; load = torch.load")
        print(f"{'state MB':>9} {'save s':>9} {'raw s':>9} {'save GB/s':>9} {'raw GB/s':>9} "
              f"{'save/raw':>9} | {'load cold':>9} {'raw cold':>9} {'load/raw':>9} | "
              f"{'load warm':>9} {'raw warm':>9} {'load/raw':>9}")
        for j in out["io"]:
            print(f"{j['state_bytes'] / 1e6:9.1f} {median(j['save_seconds']):9.3f} "
                  f"{median(j['raw_write_seconds']):9.3f} {j['save_gbps']:9.2f} "
                  f"{j['raw_write_gbps']:9.2f} {j['save_over_raw']:9.2f} | "
                  f"{j['load_cold_gbps']:9.2f} {j['raw_read_cold_gbps']:9.2f} "
                  f"{j['load_cold_over_raw']:9.2f} | {j['load_warm_gbps']:9.2f} "
                  f"{j['raw_read_warm_gbps']:9.2f} {j['load_warm_over_raw']:9.2f}")
    if "stall" in out:
        s = out["stall"]
        print(f"\ntraining stall per save, torch {torch.__version__}, {s['threads']} threads: "
              f"784-{'-'.join(map(str, s['hidden']))}-10, batch {s['batch']}, Adam, "
              f"{s['state_bytes'] / 1e6:.0f} MB of state, save every {s['save_freq']} steps, "
              f"{s['steps_per_run']} steps per run, median of {s['repeats']}")
        print(f"{'variant':12s} {'step ms':>9} {'save step':>9} {'stall ms':>9} "
              f"{'stall/step':>10} {'overhead':>9} {'measured':>9} {'other CPU':>9}")
        for v, r in s["variants"].items():
            fo = [x for x in r["foreign_cpu_share"] if x is not None]
            ovh = r["overhead_share_from_stall"]
            meas = r["overhead_share_measured"]
            print(f"{v:12s} {fmt(r['median_step_ms'], '9.1f')} "
                  f"{fmt(r['mean_save_step_ms'], '9.1f')} {fmt(r['stall_ms_per_save'], '9.1f')} "
                  f"{fmt(r['stall_share_of_step'], '10.2f')} "
                  f"{fmt(ovh * 100 if ovh is not None else None, '8.1f')}% "
                  f"{fmt(meas * 100 if meas is not None else None, '8.1f')}% "
                  f"{fmt(max(fo) * 100 if fo else None, '8.0f')}%")
        print(f"(save step = mean time of the steps that saved; stall = that minus the median "
              f"other step of the same run; overhead = stall / "
              f"({s['save_freq']} x step of the no-save run); measured = run time / no-save run "
              f"time - 1)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="io,stall", help="comma list of io,stall")
    p.add_argument("--sizes-mb", default="10,1000", help="io: state sizes in MB (1e6 bytes)")
    p.add_argument("--repeats", type=int, default=6, help="io: repeats per size (+1 warm-up)")
    p.add_argument("--settle-seconds", type=float, default=3,
                   help="io: rest before every timed operation (see bench/checkpoint/io_mode.cc); 0: none")
    p.add_argument("--hidden", default="2048,2048,2048", help="stall: hidden widths")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--steps", type=int, default=60, help="stall: steps per run")
    p.add_argument("--save-freq", type=int, default=10, help="stall: save every N steps")
    p.add_argument("--stall-repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="stall: comma list of " + ",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads (default: all cores, %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--synthetic", action="store_true", help="stall: random data")
    p.add_argument("--dir", help="parent of the scratch directory (default: the system temp "
                                 "dir); created fresh, removed at the end")
    p.add_argument("--json", metavar="FILE", help="also write the JSON here")
    p.add_argument("--quick", action="store_true",
                   help="small and fast: 10 MB, 2 repeats, 30 steps, 1 stall repeat, 0.5 s settle, "
                        "unless given")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or set(modes) - {"io", "stall"}:
        p.error("--mode takes io and/or stall")
    try:
        args.sizes_mb = [float(s) for s in args.sizes_mb.split(",") if s.strip()]
        args.hidden = [int(s) for s in args.hidden.split(",") if s.strip()]
    except ValueError as e:
        p.error(str(e))
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(args.variants) - set(VARIANTS) or "none" not in args.variants:
        p.error(f"--variants takes {', '.join(VARIANTS)} and must include none")
    if args.quick:  # only where the flag was not given
        quick = {"sizes_mb": [10.0], "repeats": 2, "steps": 30, "stall_repeats": 1,
                 "settle_seconds": 0.5}
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in quick.items():
            if "--" + key.replace("_", "-") not in given:
                setattr(args, key, value)
    if (args.repeats < 1 or args.steps < 1 or args.settle_seconds < 0 or args.save_freq < 1
            or args.stall_repeats < 1 or args.batch < 1 or not args.sizes_mb
            or min(args.sizes_mb) <= 0):
        p.error("counts and sizes must be positive")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    scratch = tempfile.mkdtemp(prefix="torch-save-bench-", dir=args.dir)
    out = {"benchmark": "torch_save", "torch_version": torch.__version__,
           "blas_library": blas_library(), "scratch_dir": scratch}
    try:
        if "io" in modes:
            out["io"] = []
            for mb in args.sizes_mb:
                if not args.quiet:
                    print(f"torch_save: io {mb:g} MB", file=sys.stderr, flush=True)
                out["io"].append(io_one_size(args, mb, scratch))
        if "stall" in modes:
            out["stall"] = stall(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_tables(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
