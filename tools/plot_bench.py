#!/usr/bin/env python3
"""Plots `bnorm bench --json FILE` results: GB/s per shape for bnorm and oneDNN, one
panel per operation and layout, with the measured copy rooflines as lines.

    build/tools/bnorm bench --json bench.json
    python3 tools/plot_bench.py bench.json bench.png      # needs python3-matplotlib
"""
import json
import os
import sys

try:
    import matplotlib
except ImportError:  # Debian's python3-matplotlib lives with /usr/bin/python3
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: plot_bench.py BENCH.json OUT.png")
    with open(argv[1]) as f:
        run = json.load(f)
    rows = run["rows"]
    ops = [op for op in ("inference", "training", "backward", "affine", "moments")
           if any(r["op"] == op for r in rows)]
    layouts = ["nchw", "nhwc"]
    fig, axes = plt.subplots(len(ops), len(layouts), figsize=(13, 3.2 * len(ops)),
                             squeeze=False)
    for i, op in enumerate(ops):
        for j, layout in enumerate(layouts):
            ax = axes[i][j]
            sel = [r for r in rows if r["op"] == op and r["layout"] == layout]
            labels = [f'{r["n"]}x{r["c"]}x{r["spatial"]}' for r in sel]
            xs = range(len(sel))
            ax.bar([x - 0.2 for x in xs], [r["gbs"] for r in sel], width=0.4, label="bnorm")
            peer = [r.get("onednn_gbs") or 0 for r in sel]
            if any(peer):
                ax.bar([x + 0.2 for x in xs], peer, width=0.4, label="oneDNN")
            ax.axhline(run["copy_nt_gbs"], color="k", linestyle="--", linewidth=1,
                       label=f'copy, non-temporal ({run["copy_nt_gbs"]:.0f} GB/s)')
            ax.axhline(run["copy_gbs"], color="gray", linestyle=":", linewidth=1,
                       label=f'copy ({run["copy_gbs"]:.0f} GB/s)')
            ax.set_xticks(list(xs))
            ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{op} {layout.upper()}", fontsize=9)
            ax.set_ylabel("GB/s (minimal traffic)", fontsize=8)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f'bnorm bench: {run["cpu"]}, {run["target"]}, {run["threads"]} threads, '
                 f'{run["cache"]} cache', fontsize=10)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=90)
    print(f"wrote {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
