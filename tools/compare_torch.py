#!/usr/bin/env python3
"""bnorm beside PyTorch on the CPU: GB/s of both, the ratio, and how far they agree.

Runs every operation (inference, affine, training forward, backward, moments) on
NCHW and NHWC (torch.channels_last) over the default shapes of `bnorm bench`
(read from bench/workloads.h), with bnorm called through its C API (ctypes, on
build/lib/libbnorm.so) and PyTorch through its ATen operators, on the very same
input buffers. GB/s count the minimal traffic of bench/workloads.h (inference and
affine 2T, training 3T, backward 3T, moments 1T; T = bytes of one tensor), so the
ratio is a ratio of times. Cold cache by default: each repetition works on another
set of buffers, rotating over 4x the last-level cache (at least 256 MiB, at most
1 GiB), as `bnorm bench` does.

PyTorch's side, per operation (torch.ops.aten unless said):
  inference  native_batch_norm(training=False)     x, gamma, beta, running stats
  training   native_batch_norm(training=True)      updates running stats in place
  backward   native_batch_norm_backward(train=True) dx, dgamma, dbeta
  affine     torch.addcmul(shift, x, scale, out=y)  what a folded BN is in PyTorch
  moments    torch.var_mean(x, dims, unbiased=False)
The .out variants (preallocated outputs) are used where they are faster: PyTorch
1.13 has no CPU kernel for native_batch_norm.out, and its native_batch_norm_backward
.out computes into temporaries and copies. Outputs PyTorch allocates count in its
time (page faults on fresh memory included), as in eager PyTorch.

Agreement: the largest difference over all outputs, absolute and relative to the
largest |PyTorch value|; where a per-channel output (statistics, dgamma, dbeta)
differs by more than 2e-6, each side's error against float64 is printed under the row.

Threads: bnorm (oneTBB) and PyTorch (torch.set_num_threads) get the same count,
--threads K (default: the CPUs this process may run on); with K below that, the
process is pinned to K CPUs before either library starts its threads.

Not part of CI. PyTorch: Debian's python3-torch (1.13; it lives in /usr/bin/python3,
which this script re-runs itself with when the python3 on PATH has no torch), or a
current one from PyPI in a virtual environment:
    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch
    /tmp/torch-venv/bin/python tools/compare_torch.py
"""

import argparse
import ctypes
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OPS = ["inference", "affine", "training", "backward", "moments"]
# workload::TrafficTensors (bench/workloads.h): the minimal traffic in tensors.
TRAFFIC = {"moments": 1, "inference": 2, "affine": 2, "training": 3, "backward": 3}
# Tensor-sized buffers per call: x; x, y; x, dy, dx (workload::BufferTensors).
BUFFERS = {"moments": 1, "inference": 2, "affine": 2, "training": 2, "backward": 3}
EPS = 1e-5
MOMENTUM = 0.1
MIB = 1 << 20
AGREE_REL = 1e-4  # rows whose worst relative difference exceeds this are flagged
REFERENCE_REL = 2e-6  # above this, a per-channel output is also checked against float64


SETTLE = 0.1  # seconds between blocks of different libraries (time_interleaved)
WARM = 0.02  # seconds of untimed calls before each block (time_interleaved)


def fail(message, code=2):
    print(f"compare_torch: {message}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="bnorm vs PyTorch on the CPU: GB/s, ratio, numerical agreement",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--lib", default=os.environ.get("BNORM_LIB"),
                   help="path of libbnorm.so (default: $BNORM_LIB, else build/lib/libbnorm.so)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for both (default: the CPUs this process may use)")
    p.add_argument("--shape", action="append", default=[],
                   help="NxCxS or NxCxHxW, repeatable (default: bnorm bench's shapes)")
    p.add_argument("--layout", choices=["nchw", "nhwc", "both"], default="both")
    p.add_argument("--op", default="all",
                   help="comma-separated list of " + ", ".join(OPS) + ", or all")
    p.add_argument("--reps", type=int, default=0, help="timed repetitions (default 10, 3 with --quick)")
    p.add_argument("--hot", action="store_true", help="same buffers every repetition")
    p.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    return p.parse_args(argv)


def import_torch():
    """Returns the torch module, re-running this script with /usr/bin/python3 (where
    Debian's python3-torch lives) when the running interpreter has no torch."""
    try:
        import torch  # noqa: F401
        return torch
    except ImportError:
        pass
    system = "/usr/bin/python3"
    if (os.path.realpath(sys.executable) != os.path.realpath(system) and os.path.exists(system)
            and not os.environ.get("BNORM_COMPARE_REEXEC")):
        probe = subprocess.run([system, "-c", "import torch"], capture_output=True)
        if probe.returncode == 0:
            print(f"(no torch in {sys.executable}; running with {system})", flush=True)
            env = dict(os.environ, BNORM_COMPARE_REEXEC="1")
            os.execve(system, [system, str(Path(__file__).resolve())] + sys.argv[1:], env)
    fail("PyTorch is not installed: `apt-get install python3-torch` (Debian, 1.13) or "
         "`pip install torch` in a virtual environment (see --help)")


def last_level_cache_bytes():
    """The largest data or unified cache of cpu0 (sysfs), or 32 MiB (roofline.h)."""
    best = 0
    for index in range(8):
        d = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}")
        try:
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction" or not size:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
        best = max(best, int(size.rstrip("KM")) * scale)
    return best or 32 * MIB


def cold_bytes():
    """roofline::ColdBytes(): 4x the LLC, at least 256 MiB, at most 1 GiB."""
    return min(max(4 * last_level_cache_bytes(), 256 * MIB), 1024 * MIB)


def default_shapes(quick):
    """The shapes of workload::DefaultWorkloads() (or QuickWorkloads()), read from
    bench/workloads.h: (name, n, c, spatial, inference_only)."""
    function = "QuickWorkloads" if quick else "DefaultWorkloads"
    text = (REPO / "bench" / "workloads.h").read_text()
    start = text.find(f"inline std::vector<Workload> {function}()")
    if start < 0:
        fail(f"cannot find {function}() in bench/workloads.h")
    body = text[start:text.find("\n}\n", start)]
    body = re.sub(r"//[^\n]*", "", body)
    shapes = []
    for m in re.finditer(r'\{"([^"]+)",\s*([\d\s*]+),\s*([\d\s*]+),\s*([\d\s*]+)(?:,\s*(true|false))?\}',
                         body):
        value = lambda s: math.prod(int(f) for f in s.split("*"))  # noqa: E731
        shapes.append((m.group(1), value(m.group(2)), value(m.group(3)), value(m.group(4)),
                       m.group(5) == "true"))
    if not shapes:
        fail(f"no shapes found in {function}() of bench/workloads.h")
    return shapes


def parse_shape(text):
    parts = text.replace(",", "x").split("x")
    if len(parts) not in (3, 4) or not all(p.isdigit() and int(p) > 0 for p in parts):
        fail(f"--shape: expected NxCxS or NxCxHxW, got '{text}'")
    n, c, s = int(parts[0]), int(parts[1]), math.prod(int(p) for p in parts[2:])
    return (f"--shape {text}", n, c, s, False)


class Shape(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int64), ("c", ctypes.c_int64), ("spatial", ctypes.c_int64),
                ("layout", ctypes.c_int)]


class Bnorm:
    """bnorm's C API through ctypes."""

    def __init__(self, path):
        self.lib = lib = ctypes.CDLL(str(path))
        P, F, U = ctypes.c_void_p, ctypes.c_float, ctypes.c_uint
        S = ctypes.POINTER(Shape)
        for name, args in {
            "bnorm_moments_f32": [S, P, P, P],
            "bnorm_forward_training_f32": [S, P, P, P, P, F, F, P, P, P, P, U],
            "bnorm_forward_inference_f32": [S, P, P, P, P, P, P, F, U],
            "bnorm_affine_f32": [S, P, P, P, P, U],
            "bnorm_backward_f32": [S, P, P, P, P, P, P, P, P, P, U],
        }.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = ctypes.c_int
        for name in ("bnorm_last_error", "bnorm_active_target", "bnorm_supported_targets"):
            getattr(lib, name).restype = ctypes.c_char_p
            getattr(lib, name).argtypes = []
        lib.bnorm_status_string.restype = ctypes.c_char_p
        lib.bnorm_status_string.argtypes = [ctypes.c_int]

    def check(self, status, what):
        if status != 0:
            raise RuntimeError(f"{what}: {self.lib.bnorm_status_string(status).decode()}: "
                               f"{self.lib.bnorm_last_error().decode()}")

    def target(self):
        return self.lib.bnorm_active_target().decode()


def ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


class Case:
    """One operation on one shape and layout: buffer sets carved from the pool, and a
    run function for bnorm and for PyTorch on buffer set `i`."""

    def __init__(self, torch, bnorm, pool, op, shape, layout, sets):
        self.torch, self.bnorm, self.op, self.layout = torch, bnorm, op, layout
        name, n, c, s, _ = shape
        self.name, self.n, self.c, self.s = name, n, c, s
        self.elements = n * c * s
        self.tensor_bytes = 4 * self.elements
        self.set_floats = (self.elements * BUFFERS[op] + 15) // 16 * 16
        self.sets = sets
        self.cshape = Shape(n, c, s, 0 if layout == "nchw" else 1)
        # BatchNorm1d on (N, C) when spatial is 1; (N, C, S, 1) otherwise, NHWC being
        # torch.channels_last. The same memory as bnorm's layouts.
        if s == 1:
            size, stride = (n, c), (c, 1)
        elif layout == "nchw":
            size, stride = (n, c, s, 1), (c * s, s, 1, 1)
        else:
            size, stride = (n, c, s, 1), (c * s, 1, c, c)
        self.dims = (0,) if s == 1 else (0, 2, 3)
        self.bufs = [[torch.as_strided(pool, size, stride, k * self.set_floats + j * self.elements)
                      for j in range(BUFFERS[op])] for k in range(sets)]
        g = torch.Generator().manual_seed(c)
        rnd = lambda lo, hi: torch.rand(c, generator=g) * (hi - lo) + lo  # noqa: E731
        self.gamma, self.beta = rnd(0.5, 1.5), rnd(-0.5, 0.5)
        self.mean, self.var = rnd(-0.5, 0.5), rnd(0.5, 2.0)
        self.scale, self.shift = rnd(0.5, 1.5), rnd(-0.5, 0.5)
        view = (1, c) if s == 1 else (1, c, 1, 1)
        self.scale_v, self.shift_v = self.scale.view(view), self.shift.view(view)
        self.rm_b, self.rv_b = self.mean.clone(), self.var.clone()  # running stats, bnorm
        self.rm_t, self.rv_t = self.mean.clone(), self.var.clone()  # running stats, torch
        self.sm_b, self.si_b = torch.empty(c), torch.empty(c)
        self.out_a, self.out_b = torch.empty(c), torch.empty(c)
        self.empty = torch.empty(0)
        # Fresh inputs in set 0, which the comparison uses: the pool holds what earlier
        # cases wrote (a training forward's y is affine in x, and as dy it would give
        # dx = 0 exactly).
        for j in range(2 if op == "backward" else 1):
            self.bufs[0][j].uniform_(-2.0, 2.0, generator=g)
        if op == "backward":  # saved statistics of x in set 0, for both
            _, self.saved_mean, self.saved_invstd = torch.ops.aten.native_batch_norm(
                self.bufs[0][0], None, None, None, None, True, 0.0, EPS)
        self.torch_call = ""
        self.torch_run = None
        self._bnorm_args = [self._make_bnorm_args(k) for k in range(sets)]

    def _make_bnorm_args(self, k):
        b = self.bufs[k]
        shp = ctypes.byref(self.cshape)
        op = self.op
        if op == "inference":
            return (shp, ptr(b[0]), ptr(b[1]), ptr(self.gamma), ptr(self.beta), ptr(self.mean),
                    ptr(self.var), EPS, 0)
        if op == "affine":
            return (shp, ptr(b[0]), ptr(b[1]), ptr(self.scale), ptr(self.shift), 0)
        if op == "training":
            return (shp, ptr(b[0]), ptr(b[1]), ptr(self.gamma), ptr(self.beta), EPS, MOMENTUM,
                    ptr(self.rm_b), ptr(self.rv_b), ptr(self.sm_b), ptr(self.si_b), 0)
        if op == "backward":
            return (shp, ptr(b[0]), ptr(b[1]), ptr(self.saved_mean), ptr(self.saved_invstd),
                    ptr(self.gamma), None, ptr(b[2]), ptr(self.out_a), ptr(self.out_b), 0)
        return (shp, ptr(b[0]), ptr(self.out_a), ptr(self.out_b))

    def run_bnorm(self, k):
        fn = getattr(self.bnorm.lib, {"inference": "bnorm_forward_inference_f32",
                                      "affine": "bnorm_affine_f32",
                                      "training": "bnorm_forward_training_f32",
                                      "backward": "bnorm_backward_f32",
                                      "moments": "bnorm_moments_f32"}[self.op])
        self.bnorm.check(fn(*self._bnorm_args[k % self.sets]), self.op)

    # PyTorch candidates: (label, function of set k returning the outputs).
    def torch_candidates(self):
        torch, aten = self.torch, self.torch.ops.aten
        op = self.op
        if op == "inference":
            return [
                ("native_batch_norm.out", lambda k: aten.native_batch_norm.out(
                    self.bufs[k][0], self.gamma, self.beta, self.mean, self.var, False, MOMENTUM,
                    EPS, out=self.bufs[k][1], save_mean=self.empty, save_invstd=self.empty)[0]),
                ("native_batch_norm", lambda k: aten.native_batch_norm(
                    self.bufs[k][0], self.gamma, self.beta, self.mean, self.var, False, MOMENTUM,
                    EPS)[0]),
            ]
        if op == "affine":
            return [("addcmul(out=)", lambda k: torch.addcmul(
                self.shift_v, self.bufs[k][0], self.scale_v, out=self.bufs[k][1]))]
        if op == "training":
            sm, si = torch.empty(self.c), torch.empty(self.c)
            return [
                ("native_batch_norm.out", lambda k: aten.native_batch_norm.out(
                    self.bufs[k][0], self.gamma, self.beta, self.rm_t, self.rv_t, True, MOMENTUM,
                    EPS, out=self.bufs[k][1], save_mean=sm, save_invstd=si)),
                ("native_batch_norm", lambda k: aten.native_batch_norm(
                    self.bufs[k][0], self.gamma, self.beta, self.rm_t, self.rv_t, True, MOMENTUM,
                    EPS)),
            ]
        if op == "backward":
            dg, db = torch.empty(self.c), torch.empty(self.c)
            return [
                ("native_batch_norm_backward.out", lambda k: aten.native_batch_norm_backward.out(
                    self.bufs[k][1], self.bufs[k][0], self.gamma, None, None, self.saved_mean,
                    self.saved_invstd, True, EPS, [True, True, True], out0=self.bufs[k][2],
                    out1=dg, out2=db)),
                ("native_batch_norm_backward", lambda k: aten.native_batch_norm_backward(
                    self.bufs[k][1], self.bufs[k][0], self.gamma, None, None, self.saved_mean,
                    self.saved_invstd, True, EPS, [True, True, True])),
            ]
        return [("var_mean", lambda k: var_mean(torch, self.bufs[k][0], self.dims))]

    def choose_torch(self):
        """Picks the fastest candidate that runs (3 hot runs each after a warm-up)."""
        best = None
        errors = []
        for label, fn in self.torch_candidates():
            try:
                fn(0)
            except (NotImplementedError, RuntimeError) as e:
                errors.append(f"{label}: {str(e).splitlines()[0]}")
                continue
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn(0)
                times.append(time.perf_counter() - t0)
            if best is None or min(times) < best[0]:
                best = (min(times), label, fn)
        if best is None:
            raise RuntimeError("; ".join(errors))
        _, self.torch_call, self.torch_run = best
        if self.op == "training":  # the probes moved torch's running stats: start again
            self.rm_t.copy_(self.mean)
            self.rv_t.copy_(self.var)

    def compare(self):
        """Runs both once on set 0 from the same state; returns (max abs, max rel, what),
        rel being relative to the largest |value| of PyTorch's output."""
        torch = self.torch
        b = self.bufs[0]
        if self.op == "training":
            for t in (self.rm_b, self.rm_t):
                t.copy_(self.mean)
            for t in (self.rv_b, self.rv_t):
                t.copy_(self.var)
        self.run_bnorm(0)
        mine = {}
        if self.op in ("inference", "affine", "training"):
            mine["y"] = b[1].clone()
        if self.op == "training":
            mine.update(saved_mean=self.sm_b.clone(), saved_invstd=self.si_b.clone(),
                        running_mean=self.rm_b.clone(), running_var=self.rv_b.clone())
        if self.op == "backward":
            mine.update(dx=b[2].clone(), dgamma=self.out_a.clone(), dbeta=self.out_b.clone())
        if self.op == "moments":
            mine.update(mean=self.out_a.clone(), var=self.out_b.clone())
        out = self.torch_run(0)
        if self.op in ("inference", "affine"):
            theirs = {"y": out}
        elif self.op == "training":
            theirs = {"y": out[0], "saved_mean": out[1], "saved_invstd": out[2],
                      "running_mean": self.rm_t, "running_var": self.rv_t}
        elif self.op == "backward":
            theirs = {"dx": out[0], "dgamma": out[1], "dbeta": out[2]}
        else:
            theirs = {"var": out[0], "mean": out[1]}
        worst = (0.0, 0.0, "")
        for key, ref in theirs.items():
            if mine[key].shape != ref.shape:
                raise RuntimeError(f"{key}: shapes differ {tuple(mine[key].shape)} vs "
                                   f"{tuple(ref.shape)}")
            ref = ref.double()
            max_abs = (mine[key].double() - ref).abs().max().item()
            scale = ref.abs().max().item()
            rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
            if math.isnan(max_abs):
                rel = max_abs = math.nan
            if worst[2] == "" or rel > worst[1] or math.isnan(rel):
                worst = (max_abs, rel, key)
        self.outputs = (mine, theirs)
        return worst

    def reference_errors(self, key):
        """For a per-channel output of the last compare() (statistics, dgamma, dbeta),
        returns the errors of bnorm and PyTorch against a float64 computation, each as
        max |error| / max |reference|; None for other outputs."""
        torch = self.torch
        x = self.bufs[0][0].double()
        if key in ("mean", "saved_mean", "var", "saved_invstd"):
            var, mean = var_mean(torch, x, self.dims)
            ref = {"mean": mean, "saved_mean": mean, "var": var,
                   "saved_invstd": 1.0 / torch.sqrt(var + EPS)}[key]
        elif key in ("dgamma", "dbeta"):
            dy = self.bufs[0][1].double()
            if key == "dbeta":
                ref = dy.sum(dim=self.dims)
            else:
                view = (1, self.c) if self.s == 1 else (1, self.c, 1, 1)
                xhat = (x - self.saved_mean.double().view(view)) * \
                    self.saved_invstd.double().view(view)
                ref = (dy * xhat).sum(dim=self.dims)
        else:
            return None
        scale = ref.abs().max().item() or 1.0
        mine, theirs = self.outputs
        return tuple((side[key].double() - ref).abs().max().item() / scale
                     for side in (mine, theirs))


def var_mean(torch, x, dims):
    try:
        return torch.var_mean(x, dim=dims, correction=0)
    except TypeError:
        return torch.var_mean(x, dim=dims, unbiased=False)


def time_interleaved(fns, sets, reps):
    """Times `reps` calls of each of the functions `fns` (each called with a buffer set
    index, rotating over `sets`). The functions take turns in blocks of back-to-back calls
    (as a program calls one library), in the order A B .. B A, so that drift of the
    machine spreads evenly over them. Before each block (but the middle one, which
    repeats the function just timed): a pause of SETTLE seconds after
    the other side's calls (an OpenMP pool spins for milliseconds after a call, and on a
    machine with as many threads as CPUs a spinning thread takes a CPU from the timed
    calls: alternating single calls made bnorm up to 1.6x slower), then untimed calls for
    WARM seconds (at least 2) that bring the block's own thread pool up to speed (after
    an idle pause, oneTBB's second thread joined bnorm's calls only after a few ms of
    calls on this 2-CPU VM: with 2 ms of warm-up bnorm ran at one-thread speed).
    Returns (median, best) seconds per function."""
    k = 0
    times = [[] for _ in fns]
    order = list(range(len(fns)))
    first_half = (reps + 1) // 2
    for block, i in enumerate(order + order[::-1]):
        if block != len(fns):  # block len(fns) repeats the function just timed
            if block > 0:
                time.sleep(SETTLE)
            warm_start = time.perf_counter()
            warm = 0
            while warm < 2 or time.perf_counter() - warm_start < WARM:
                fns[i](k % sets)
                k += 1
                warm += 1
        calls = first_half if block < len(fns) else reps - first_half
        for _ in range(calls):
            t0 = time.perf_counter()
            fns[i](k % sets)
            times[i].append(time.perf_counter() - t0)
            k += 1
    return [(statistics.median(t), min(t)) for t in times]


def main(argv):
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    threads = args.threads or len(cpus)
    if threads < 1 or threads > len(cpus):
        fail(f"--threads: expected 1..{len(cpus)} (the CPUs this process may use)")
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])  # before TBB or OpenMP start threads
    torch = import_torch()
    torch.set_num_threads(threads)

    lib = Path(args.lib) if args.lib else REPO / "build" / "lib" / "libbnorm.so"
    if not lib.exists():
        fail(f"{lib} not found: build first (`bash tools/run.sh bench`, or meson setup build "
             f"&& ninja -C build), or pass --lib")
    bnorm = Bnorm(lib)

    ops = OPS if args.op == "all" else args.op.split(",")
    for op in ops:
        if op not in OPS:
            fail(f"--op: expected {', '.join(OPS)} or all, got '{op}'")
    layouts = ["nchw", "nhwc"] if args.layout == "both" else [args.layout]
    shapes = [parse_shape(s) for s in args.shape] or default_shapes(args.quick)
    reps = args.reps or (3 if args.quick else 10)
    cold = not args.hot
    rotation = 8 * MIB if args.quick else cold_bytes()

    rows = []
    for shape in shapes:
        name, n, c, s, inference_only = shape
        for layout in layouts:
            for op in ops:
                if inference_only and op not in ("inference", "affine") and args.op == "all":
                    continue
                if op == "training" and n * s < 2:
                    continue
                rows.append((op, shape, layout))

    def sets_of(op, shape):
        set_bytes = 4 * ((shape[1] * shape[2] * shape[3] * BUFFERS[op] + 15) // 16 * 16)
        return max(2, -(-rotation // set_bytes)) if cold else 1

    pool_floats = max(((shape[1] * shape[2] * shape[3] * BUFFERS[op] + 15) // 16 * 16) *
                      sets_of(op, shape) for op, shape, _ in rows)
    print(f"compare_torch: bnorm {lib} (target {bnorm.target()}) vs PyTorch {torch.__version__}"
          f" on {threads} thread{'s' if threads > 1 else ''}", flush=True)
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    print(f"PyTorch: {torch.__config__.parallel_info().splitlines()[-1].strip()}"
          + (f", CPU capability {capability()}" if capability else ""))
    print(("cold cache: rotating over %d MiB of buffers" % (rotation // MIB)) if cold
          else "hot cache: the same buffers every repetition", f"; median of {reps} reps", sep="")
    print("GB/s on the minimal traffic: inference/affine 2T, training 3T, backward 3T, "
          "moments 1T (T = bytes of one tensor); x torch = bnorm GB/s / PyTorch GB/s "
          "(> 1: bnorm faster); max abs / max rel: worst difference over the outputs, rel to "
          f"the largest |PyTorch value| ('!' above {AGREE_REL:g})\n", flush=True)
    pool = torch.empty(pool_floats, dtype=torch.float32)
    pool.uniform_(-2.0, 2.0, generator=torch.Generator().manual_seed(1))

    header = (f"{'op':9} {'layout':6} {'NxCxS':15} {'MB':>8} {'bnorm GB/s':>10} "
              f"{'torch GB/s':>10} {'x torch':>8} {'max abs':>9} {'max rel':>9}  "
              f"{'worst':12} {'torch call':30} shape")
    print(header, flush=True)
    results = []
    ratios = {}
    for op, shape, layout in rows:
        case = Case(torch, bnorm, pool, op, shape, layout, sets_of(op, shape))
        dims = f"{case.n}x{case.c}x{case.s}"
        try:
            case.choose_torch()
            max_abs, max_rel, worst = case.compare()
            (med_b, best_b), (med_t, best_t) = time_interleaved(
                [case.run_bnorm, case.torch_run], case.sets, reps)
        except RuntimeError as e:
            print(f"{op:9} {layout:6} {dims:15}  FAILED: {e}", flush=True)
            results.append({"op": op, "layout": layout, "shape": dims, "error": str(e)})
            continue
        traffic = TRAFFIC[op] * case.tensor_bytes
        gbs_b, gbs_t = traffic / med_b * 1e-9, traffic / med_t * 1e-9
        ratio = gbs_b / gbs_t
        ratios.setdefault(f"{op} {layout}", []).append(ratio)
        flag = "!" if not max_rel <= AGREE_REL else " "
        print(f"{op:9} {layout:6} {dims:15} {case.tensor_bytes * 1e-6:8.2f} {gbs_b:10.1f} "
              f"{gbs_t:10.1f} {ratio:7.2f}x {max_abs:9.2e} {max_rel:9.2e}{flag} {worst:12} "
              f"{case.torch_call:30} {shape[0]}", flush=True)
        # Where they differ by more than float32 rounding, say which one is right.
        reference = case.reference_errors(worst) if not max_rel <= REFERENCE_REL else None
        if reference:
            print(f"{'':9} {worst} against float64: bnorm {reference[0]:.1e}, "
                  f"PyTorch {reference[1]:.1e} (max error / max |value|)", flush=True)
        results.append({"op": op, "layout": layout, "n": case.n, "c": case.c, "spatial": case.s,
                        "name": shape[0], "tensor_bytes": case.tensor_bytes,
                        "traffic_bytes": traffic, "bnorm_median_us": med_b * 1e6,
                        "bnorm_best_us": best_b * 1e6, "bnorm_gbs": gbs_b,
                        "torch_median_us": med_t * 1e6, "torch_best_us": best_t * 1e6,
                        "torch_gbs": gbs_t, "x_torch": ratio, "torch_call": case.torch_call,
                        "max_abs_diff": max_abs, "max_rel_diff": max_rel, "worst_output": worst,
                        "float64_error_bnorm": reference[0] if reference else None,
                        "float64_error_torch": reference[1] if reference else None})
        del case
    if ratios:
        print("\nbnorm / PyTorch, geometric mean over shapes:")
        for key, values in ratios.items():
            geo = math.exp(sum(math.log(v) for v in values) / len(values))
            print(f"  {key:16} {geo:6.2f}x over {len(values)} shapes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tool": "compare_torch.py", "torch": torch.__version__,
                       "bnorm_target": bnorm.target(), "threads": threads,
                       "cache": "cold" if cold else "hot", "reps": reps, "rows": results}, f,
                      indent=1)
        print(f"wrote {args.json}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
