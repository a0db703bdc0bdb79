#!/usr/bin/env python3
"""Writes the seed corpus of the bnorm fuzz target (test/fuzz/corpus/seed-*).

Each seed is one call in the input format of bnorm_fuzz.cc (see its header): every
operation and layout with ordinary data, in place, ReLU, serial, optional buffers
left out; every rule of DESIGN.md "Bad input" broken once; NaN, Inf, denormal and huge
data; shapes that take the threaded and chunked paths; targets by every kind of name.
The fuzzer starts from these; keep the encoder below in step with Decode().
    python3 test/fuzz/make_seeds.py [OUT_DIR]
"""
import os
import struct
import sys

OPS = ["moments", "training", "inference", "fold", "affine", "backward"]
# Buffers per operation in C argument order: (name, required).
SLOTS = {
    "moments": [("x", 1), ("mean", 1), ("var", 1)],
    "training": [("x", 1), ("y", 1), ("gamma", 0), ("beta", 0), ("running_mean", 0),
                 ("running_var", 0), ("saved_mean", 0), ("saved_invstd", 0)],
    "inference": [("x", 1), ("y", 1), ("gamma", 0), ("beta", 0), ("mean", 1), ("var", 1)],
    "fold": [("gamma", 0), ("beta", 0), ("mean", 1), ("var", 1), ("scale", 1), ("shift", 1)],
    "affine": [("x", 1), ("y", 1), ("scale", 1), ("shift", 1)],
    "backward": [("x", 1), ("dy", 1), ("saved_mean", 1), ("saved_invstd", 1), ("gamma", 0),
                 ("y", 0), ("dx", 0), ("dgamma", 0), ("dbeta", 0)],
}
INPUTS = {
    "moments": {"x"},
    "training": {"x", "gamma", "beta", "running_mean", "running_var"},
    "inference": {"x", "gamma", "beta", "mean", "var"},
    "fold": {"gamma", "beta", "mean", "var"},
    "affine": {"x", "scale", "shift"},
    "backward": {"x", "dy", "saved_mean", "saved_invstd", "gamma", "y"},
}
# Interesting() table indices.
INTERESTING = {"0": 0, "-0": 1, "1": 2, "-1": 3, "0.5": 4, "3": 5, "-7.25": 6, "1e-5": 7,
               "1e4": 8, "-1e4": 9, "1e19": 10, "3e19": 11, "-3e19": 12, "1e30": 13,
               "1e38": 14, "max": 15, "-max": 16, "min": 17, "-min": 18, "denorm": 19,
               "1e-40": 20, "-1e-40": 21, "1e-20": 22, "1e-30": 23, "nan": 24, "-nan": 25,
               "inf": 26, "-inf": 27, "2^24": 28, "0.1": 29, "1/3": 30}
EPS = {"1e-5": 0, "1e-3": 12, "0.1": 13, "1": 14, "1e-30": 15, "denorm": 16, "max": 17,
       "0": 18, "-0": 19, "-1e-5": 20, "nan": 21, "inf": 22, "raw": 23}
MOMENTUM = {"0.1": 0, "0": 12, "1": 13, "-0": 14, "0.5": 15, "1+ulp": 16, "-denorm": 17,
            "nan": 18, "inf": 19, "-inf": 20, "2": 21}
MODES = {"sensible": 0, "normal": 4, "raw": 5, "palette": 6, "specials": 7, "constant": 8,
         "ramp": 9}


class Call:
    def __init__(self, op):
        self.op = op
        self.b = bytearray([OPS.index(op)])
        self.target = bytes([0])
        self.shape = None
        self.flags = bytes([0])
        self.eps = bytes([0])
        self.momentum = bytes([0])
        self.place = {name: bytes([0]) for name, _ in SLOTS[op]}
        self.data = {name: bytes([0, 0, 0, 0, 0]) for name in INPUTS[op]}
        self.slice = b""
        self.with_shape(2, 3, 5)

    # --- fields -------------------------------------------------------------------
    def with_target(self, kind, arg=0):
        if kind == "index":  # t % (supported count): 0 is the best
            self.target = bytes([arg])
        elif kind == "null":
            self.target = bytes([10])
        elif kind == "empty":
            self.target = bytes([11])
        elif kind == "lower":
            self.target = bytes([12, arg])
        elif kind == "lacking":
            self.target = bytes([13, arg])
        elif kind == "unknown":
            self.target = bytes([14, arg])
        elif kind == "raw":
            self.target = bytes([15, len(arg)]) + arg
        return self

    def with_shape(self, n, c, spatial, layout="nchw", null=False):
        if null:
            head = bytes([255])  # 255 % 8 == 7: a raw layout follows
            head += struct.pack("<i", 0)
        elif layout == "nchw":
            head = bytes([0])
        elif layout == "nhwc":
            head = bytes([4])
        else:
            head = bytes([7]) + struct.pack("<i", layout)
        dims = [c] if self.op == "fold" else [n, c, spatial]
        self.shape = head + b"".join(dim(d) for d in dims)
        return self

    def with_flags(self, flags):
        self.flags = bytes([flags]) if flags < 8 else bytes([255]) + struct.pack("<I", flags)
        return self

    def with_eps(self, name, raw=None):
        self.eps = bytes([EPS[name]])
        if name == "inf":
            self.eps += bytes([raw or 0])
        if name == "raw":
            self.eps += struct.pack("<f", raw)
        return self

    def with_momentum(self, name):
        self.momentum = bytes([MOMENTUM[name]])
        return self

    def own(self, name, misalign=0):
        self.place[name] = bytes([misalign << 4])
        return self

    def null(self, name):
        required = dict(SLOTS[self.op])[name]
        self.place[name] = bytes([12 if required else 7])
        return self

    def alias(self, name, host, kind, amount=1):
        """kind: 0 equal, 1 inside +amount, 2 -amount, 3 across the host's end,
        4 its end across the host's start, 5 right after, 6 right before, 7 gap."""
        required = dict(SLOTS[self.op])[name]
        names = [s for s, _ in SLOTS[self.op]]
        before = [s for s in names[:names.index(name)] if self._present(s)]
        index = before.index(host)  # the decoder counts the present buffers before this one
        self.place[name] = bytes([13 if required else 12, index, kind, amount - 1])
        return self

    def _present(self, name):
        code = self.place[name][0] & 15
        required = dict(SLOTS[self.op])[name]
        return not ((required and code == 12) or (not required and 7 <= code < 12))

    def fill(self, name, mode, seed=1, *params):
        out = bytes([MODES[mode]]) + struct.pack("<I", seed)
        if mode in ("normal", "ramp"):
            out += b"".join(interesting(p) for p in params)
        elif mode == "raw":
            out += bytes([len(params) - 1]) + b"".join(struct.pack("<f", p) for p in params)
        elif mode in ("palette", "constant"):
            out += bytes([len(params) - 1]) + b"".join(interesting(p) for p in params)
        elif mode == "specials":
            out += bytes([params[0] if params else 40])
        self.data[name] = out
        return self

    def with_slice(self, c_begin, c_end):
        """The _slice_f32 entry point on channels [c_begin, c_end) (exact values)."""
        self.slice = bytes([3, 6]) + struct.pack("<q", c_begin) + bytes([6]) + struct.pack("<q", c_end)
        return self

    def encode(self):
        out = bytearray(self.b) + self.target + self.shape + self.flags + self.eps + self.momentum
        for name, _ in SLOTS[self.op]:
            out += self.place[name]
        for name, _ in SLOTS[self.op]:
            if name in INPUTS[self.op]:
                out += self.data[name]
        return bytes(out + self.slice)


def dim(v):
    if 1 <= v <= 33:
        return bytes([0, v - 1])
    if 34 <= v < 34 + 5000:
        return bytes([8]) + struct.pack("<H", v - 34)
    if 0 < v <= 1 << 19:
        return bytes([9]) + struct.pack("<I", v)
    if v == 0:
        return bytes([10])
    if -256 <= v < 0:
        return bytes([11, -v - 1])
    return bytes([15]) + struct.pack("<q", v)


def interesting(p):
    if isinstance(p, str):
        return bytes([INTERESTING[p]])
    return bytes([31]) + struct.pack("<f", p)


def seeds():
    out = {}

    def add(name, call):
        out[name] = call.encode()

    shapes = [(2, 3, 5), (1, 17, 33), (3, 16, 1), (2, 5, 1009), (1, 1, 1)]
    # Ordinary calls: every op and layout, a few shapes, with ordinary data.
    for op in OPS:
        for layout in ("nchw", "nhwc"):
            for k, (n, c, sp) in enumerate(shapes):
                if op == "training" and n * sp < 2:
                    continue
                add(f"{op}-{layout}-{n}x{c}x{sp}", Call(op).with_shape(n, c, sp, layout))
    # Argument variants.
    add("training-relu-biased", Call("training").with_flags(3).with_shape(4, 7, 25, "nhwc"))
    add("training-inplace", Call("training").alias("y", "x", 0).with_shape(2, 33, 40))
    add("training-no-optional", Call("training").null("gamma").null("beta").null("running_mean")
        .null("running_var").null("saved_mean").null("saved_invstd"))
    add("training-momentum-0", Call("training").with_momentum("0"))
    add("training-momentum-1", Call("training").with_momentum("1").with_flags(2))
    add("inference-inplace-relu", Call("inference").alias("y", "x", 0).with_flags(1))
    add("inference-misaligned", Call("inference").own("x", 3).own("y", 1).with_shape(3, 19, 23))
    add("affine-inplace", Call("affine").alias("y", "x", 0).with_shape(2, 1000, 3, "nhwc"))
    add("affine-relu-serial", Call("affine").with_flags(5).with_shape(1, 33, 1000))
    add("fold-inplace", Call("fold").alias("scale", "gamma", 0).alias("shift", "beta", 0)
        .with_shape(1, 37, 1))
    add("fold-no-gamma-beta", Call("fold").null("gamma").null("beta"))
    add("backward-relu", Call("backward").with_flags(1).with_shape(2, 17, 16, "nhwc"))
    add("backward-dx-equals-dy", Call("backward").alias("dx", "dy", 0))
    add("backward-dx-equals-x", Call("backward").alias("dx", "x", 0).with_flags(1))
    add("backward-only-dx", Call("backward").null("dgamma").null("dbeta"))
    add("backward-nothing", Call("backward").null("dx").null("dgamma").null("dbeta"))
    add("inputs-overlap", Call("backward").alias("dy", "x", 1, 3))
    # Shapes that take the threaded, chunked and non-fused paths.
    add("moments-plane-chunks", Call("moments").with_shape(4, 3, 30000))
    add("moments-nhwc-rows-tiled", Call("moments").with_shape(300, 1500, 1, "nhwc"))
    add("training-unfused", Call("training").with_shape(1, 1, 300000))
    add("training-short-planes", Call("training").with_shape(3000, 7, 9))
    add("backward-unfused", Call("backward").with_shape(1, 2, 200000))
    add("backward-rows", Call("backward").with_shape(200, 100, 20))
    add("affine-big-nhwc", Call("affine").with_shape(64, 2053, 3, "nhwc"))
    # Empty tensors.
    for op in ("moments", "inference", "affine", "backward"):
        add(f"{op}-n0", Call(op).with_shape(0, 3, 5))
        add(f"{op}-n0-null-x", Call(op).with_shape(0, 3, 5).null("x"))
    for op in OPS:
        add(f"{op}-c0", Call(op).with_shape(2, 0, 5))
    # Bad input: every rule once per operation it applies to.
    for op in OPS:
        if op == "fold":
            add("fold-c-negative", Call(op).with_shape(1, -1, 1))
            add("fold-c-overflow", Call(op).with_shape(1, 1 << 62, 1))
        else:
            add(f"{op}-shape-null", Call(op).with_shape(1, 1, 1, null=True))
            add(f"{op}-n-negative", Call(op).with_shape(-1, 3, 5))
            add(f"{op}-c-min", Call(op).with_shape(2, -(1 << 63), 5))
            add(f"{op}-spatial-negative", Call(op).with_shape(2, 3, -7))
            add(f"{op}-layout-2", Call(op).with_shape(2, 3, 5, layout=2))
            add(f"{op}-overflow-bytes", Call(op).with_shape(1 << 31, 1 << 31, 1))
            add(f"{op}-overflow-count", Call(op).with_shape(1 << 62, 3, 5))
            add(f"{op}-c-bytes-overflow", Call(op).with_shape(0, (1 << 62) + 1, 5))
            add(f"{op}-huge-valid", Call(op).with_shape(1 << 20, 64, 1 << 20))
        for name, required in SLOTS[op]:
            if required:
                add(f"{op}-{name}-null", Call(op).null(name))
        if op in ("training", "inference", "fold"):
            for e in ("0", "-0", "-1e-5", "nan", "inf"):
                add(f"{op}-eps-{e}", Call(op).with_eps(e))
            add(f"{op}-eps-tiny", Call(op).with_eps("denorm"))
        if op != "moments" and op != "fold":
            add(f"{op}-flags-8", Call(op).with_flags(8))
            add(f"{op}-flags-all", Call(op).with_flags(0xFFFFFFFF))
    for m in ("nan", "inf", "-inf", "2", "-denorm", "1+ulp"):
        add(f"training-momentum-{m}", Call("training").with_momentum(m))
    add("training-count-1", Call("training").with_shape(1, 3, 1))
    add("training-count-0", Call("training").with_shape(0, 3, 5))
    add("training-running-mean-only", Call("training").null("running_var"))
    add("training-running-var-only", Call("training").null("running_mean"))
    add("backward-relu-without-y", Call("backward").with_flags(1).null("y"))
    # Overlaps: partial (error), adjacent (fine).
    add("affine-y-x-plus-1", Call("affine").alias("y", "x", 1, 1))
    add("affine-y-x-minus-1", Call("affine").alias("y", "x", 2, 1))
    add("affine-y-across-end", Call("affine").alias("y", "x", 3, 1))
    add("affine-y-after-x", Call("affine").alias("y", "x", 5))
    add("affine-y-before-x", Call("affine").alias("y", "x", 6))
    add("affine-scale-in-y", Call("affine").alias("scale", "x", 1, 2).alias("y", "x", 0))
    add("moments-mean-equals-var", Call("moments").alias("var", "mean", 0))
    add("moments-mean-in-x", Call("moments").alias("mean", "x", 1, 4))
    add("training-saved-in-running", Call("training").alias("saved_mean", "running_mean", 0))
    add("training-running-equals-gamma", Call("training").alias("running_mean", "gamma", 0))
    add("training-gamma-over-y", Call("training").alias("gamma", "y", 3, 2))
    add("inference-var-after-y", Call("inference").alias("var", "y", 5))
    add("fold-scale-gamma-plus-1", Call("fold").alias("scale", "gamma", 1, 1))
    add("fold-scale-equals-shift", Call("fold").alias("shift", "scale", 0))
    add("backward-dx-dy-plus-1", Call("backward").alias("dx", "dy", 1, 1))
    add("backward-dgamma-in-x", Call("backward").alias("dgamma", "x", 1, 1))
    add("backward-dx-equals-y", Call("backward").with_flags(1).alias("dx", "y", 0))
    # Channel slices.
    for op in ("moments", "training", "inference", "affine", "backward"):
        add(f"{op}-slice-middle", Call(op).with_shape(3, 17, 16).with_slice(4, 9))
        add(f"{op}-slice-nhwc", Call(op).with_shape(5, 33, 3, "nhwc").with_slice(1, 32))
        add(f"{op}-slice-one", Call(op).with_shape(2, 5, 1000).with_slice(4, 5))
        add(f"{op}-slice-empty", Call(op).with_shape(2, 5, 7).with_slice(3, 3))
        add(f"{op}-slice-reversed", Call(op).with_shape(2, 5, 7).with_slice(3, 2))
        add(f"{op}-slice-past-c", Call(op).with_shape(2, 5, 7).with_slice(0, 6))
        add(f"{op}-slice-negative", Call(op).with_shape(2, 5, 7).with_slice(-1, 2))
        add(f"{op}-slice-big", Call(op).with_shape(1, 3, 200000).with_slice(1, 2))
        add(f"{op}-slice-rows", Call(op).with_shape(200, 100, 20).with_slice(37, 61))
        add(f"{op}-slice-flags", Call(op).with_flags(16).with_slice(0, 1))
    add("affine-slice-inplace", Call("affine").alias("y", "x", 0).with_shape(4, 9, 50, "nhwc")
        .with_slice(2, 7))
    add("training-slice-specials", Call("training").fill("x", "specials", 3, 60)
        .with_shape(2, 7, 33).with_slice(2, 5))
    # Targets.
    for i in range(1, 5):
        add(f"target-index-{i}", Call("affine").with_target("index", i).with_shape(3, 17, 16))
    add("target-null", Call("moments").with_target("null"))
    add("target-empty", Call("moments").with_target("empty"))
    add("target-lower", Call("moments").with_target("lower", 1))
    add("target-lacking", Call("moments").with_target("lacking", 0))
    add("target-unknown", Call("moments").with_target("unknown", 3))
    add("target-raw", Call("moments").with_target("raw", b"avx2"))
    # Special data.
    for op in ("moments", "training", "inference", "affine", "backward"):
        add(f"{op}-specials", Call(op).fill("x", "specials", 3, 60).with_shape(2, 7, 33))
        add(f"{op}-one-nan", Call(op).fill("x", "palette", 5, "1", "0.5", "3", "nan")
            .with_shape(1, 4, 40, "nhwc"))
        add(f"{op}-inf", Call(op).fill("x", "palette", 6, "1", "-1", "inf")
            .with_shape(2, 3, 17))
        add(f"{op}-denormals", Call(op).fill("x", "palette", 7, "denorm", "1e-40", "-1e-40",
                                             "min").with_shape(2, 5, 40))
        add(f"{op}-huge-values", Call(op).fill("x", "normal", 8, "3e19", "1e19")
            .with_shape(2, 5, 40))
        add(f"{op}-big-mean", Call(op).fill("x", "normal", 9, "1e4", "1")
            .with_shape(1, 3, 3000, "nhwc"))
        add(f"{op}-constant", Call(op).fill("x", "constant", 10, "0.1", "-7.25", "1e30", "0")
            .with_shape(3, 8, 25))
        add(f"{op}-ramp", Call(op).fill("x", "ramp", 11, "-1e4", "0.5").with_shape(1, 2, 5000))
        add(f"{op}-raw", Call(op).fill("x", "raw", 12, 1.5, -2.25, 1e-39, 3e38)
            .with_shape(2, 9, 15))
        add(f"{op}-tiny-values", Call(op).fill("x", "normal", 13, "1e-20", "1e-20")
            .with_shape(2, 5, 40).with_eps("denorm"))
    add("inference-var-minus-eps", Call("inference").fill("var", "constant", 1, "0")
        .with_eps("denorm"))
    add("fold-specials", Call("fold").fill("var", "specials", 2, 120).fill("gamma", "specials", 3, 120))
    add("affine-scale-specials", Call("affine").fill("scale", "palette", 4, "0", "inf", "nan", "-max"))
    add("backward-specials-dy", Call("backward").fill("dy", "specials", 5, 80).with_flags(1))
    add("backward-invstd-inf", Call("backward").fill("saved_invstd", "palette", 6, "inf", "0", "1"))
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(out_dir, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"{len(seeds())} seeds in {out_dir}")


if __name__ == "__main__":
    main()
