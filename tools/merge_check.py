#!/usr/bin/env python3
"""Merges `bnorm check --json` reports of several machines into one markdown table.

usage: tools/merge_check.py [--out FILE] [--update-doc FILE] LABEL=REPORT.json ...

Each argument names one machine (or emulated CPU) and its report; there is one table
per element type of the tensors (float32, bfloat16, float16), each with one row per
checked output (moments.mean, training.y, ...) and one column per machine and target,
holding the worst error against the float64 reference in the output's unit (ulps of
the reference's magnitude, relative error, a count, or for half-precision tensors the
fraction of the bound "half an ulp of the type + 64 float32 ulps"), with the tolerance
beside it. A cell over its tolerance is marked **x**.

Exits 1 (after printing the table and the reasons) if any report is missing or
unreadable, if a report did not check every target its CPU supports (or every element
type, unless it says the types were selected), if a target
could not be dispatched, or if any output of any target is out of tolerance; 0 when
everything agrees with the reference; 2 on bad usage.

--out FILE         write the markdown to FILE (default: stdout)
--update-doc FILE  also replace the text between the lines
                   <!-- agreement:begin --> and <!-- agreement:end --> of FILE
"""

import argparse
import json
import math
import sys

BEGIN = "<!-- agreement:begin -->"
END = "<!-- agreement:end -->"


def load(label, path, problems):
    """Returns the parsed report, or None (with the reason added to problems)."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as e:
        problems.append(f"{label}: no report ({path}: {e.strerror})")
        return None
    except json.JSONDecodeError as e:
        problems.append(f"{label}: {path} is not valid JSON ({e})")
        return None
    if not isinstance(report, dict) or not report.get("targets"):
        problems.append(f"{label}: {path} lists no targets")
        return None
    return report


def cell_failed(op):
    """Returns whether one output of one target is out of tolerance."""
    worst = op.get("worst")
    if op.get("failed", 0) != 0 or op.get("pass") is False:
        return True
    if op.get("checked", 0) == 0:
        return False
    # JSON null stands for a non-finite worst error: always a failure.
    return worst is None or not math.isfinite(worst) or worst > op["tolerance"]


def fmt_value(op):
    if op.get("checked", 0) == 0:
        return "-"
    worst = op.get("worst")
    if worst is None or not math.isfinite(worst):
        text = "inf"
    elif op["unit"] == "relative":
        text = f"{worst:.2e}"
    elif op["unit"] == "count":
        text = f"{worst:.0f}"
    else:
        text = f"{worst:.2f}"
    return f"**{text} x**" if cell_failed(op) else text


def fmt_tolerance(op):
    if op["unit"] == "relative":
        return f"{op['tolerance']:.0e} rel"
    if op["unit"] == "count":
        return f"{op['tolerance']:.0f}"
    return f"{op['tolerance']:.0f} {op['unit']}"


TYPES = ("f32", "bf16", "f16")


def type_of(target):
    """Returns the element type of one target entry (reports before types: f32)."""
    return target.get("type", "f32")


def table(type_name, columns, problems):
    """Returns the markdown table of one element type's columns [(label, report, target)]."""
    # Rows: the outputs in the order of the first column; any other output after them.
    names = []
    for _, _, t in columns:
        for name in t.get("operations", {}):
            if name not in names:
                names.append(name)

    lines = [f"Tensors of {type_name}:", ""]
    header = ["output", "tolerance"] + [f"{label}<br>{t['target']}" for label, _, t in columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---", "---"] + ["---:"] * len(columns)) + " |")
    for name in names:
        first = next(t["operations"][name] for _, _, t in columns if name in t["operations"])
        row = [f"`{name}`", fmt_tolerance(first)]
        for label, _, t in columns:
            op = t["operations"].get(name)
            if op is None:
                row.append("n/a")
                continue
            row.append(fmt_value(op))
            if cell_failed(op):
                problems.append(f"{label} {t['target']} {type_name} {name}: worst "
                                f"{fmt_value(op)} (tolerance {fmt_tolerance(op)}, "
                                f"{op.get('failed', 0)} of {op.get('checked', 0)} values failed)")
        lines.append("| " + " | ".join(row) + " |")
    row = ["shapes checked", ""] + [str(t.get("shapes", r.get("cases", "?"))) for _, r, t in columns]
    lines.append("| " + " | ".join(row) + " |")
    row = ["**verdict**", ""]
    for _, _, t in columns:
        ok = t.get("dispatched") and t.get("pass") and not any(
            cell_failed(op) for op in t.get("operations", {}).values())
        row.append("pass" if ok else "**FAIL**")
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def merge(reports, problems):
    """Returns the markdown for [(label, report)] and adds failures to problems: one
    table per element type (float32, bfloat16, float16), a column per machine and
    target."""
    columns = []  # (label, report, target entry)
    for label, report in reports:
        supported = report.get("supported_targets", "").split()
        types = [ty for ty in TYPES if any(type_of(t) == ty for t in report["targets"])]
        missing_types = [ty for ty in TYPES if ty not in types]
        if missing_types and not report.get("types_selected"):
            problems.append(f"{label}: element types not checked: {' '.join(missing_types)}")
        for ty in types:
            checked = [t["target"] for t in report["targets"] if type_of(t) == ty]
            missing = [t for t in supported if t not in checked]
            if missing and not report.get("targets_selected"):
                problems.append(f"{label} {ty}: supported but not checked: {' '.join(missing)}")
        if report.get("pass") is not True:
            problems.append(f"{label}: the report itself says FAIL")
        for t in report["targets"]:
            columns.append((label, report, t))
            if not t.get("dispatched"):
                problems.append(f"{label} {t['target']} {type_of(t)}: not dispatched: "
                                f"{t.get('dispatch_message', '')}")

    tables = []
    for ty in TYPES + tuple(sorted({type_of(t) for _, _, t in columns} - set(TYPES))):
        of_type = [col for col in columns if type_of(col[2]) == ty]
        if of_type:
            tables.append(table(ty, of_type, problems))

    notes = []
    for label, report in reports:
        targets = []
        for t in report["targets"]:
            if t["target"] not in targets:
                targets.append(t["target"])
        types = []
        for t in report["targets"]:
            if type_of(t) not in types:
                types.append(type_of(t))
        notes.append(f"- {label}: {report.get('cases', '?')} shapes, targets checked: "
                     f"{' '.join(targets)}"
                     f"{' (selected)' if report.get('targets_selected') else ''} of "
                     f"{report.get('supported_targets', '?')} supported, tensors of "
                     f"{', '.join(types)}, {report.get('seconds', 0):.1f} s")
    return "\n".join(tables) + "\n" + "\n".join(notes) + "\n"


def update_doc(path, markdown):
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"merge_check: {path} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + markdown + END + tail)


def main():
    parser = argparse.ArgumentParser(
        description="Merge `bnorm check --json` reports into one markdown table.")
    parser.add_argument("reports", nargs="+", metavar="LABEL=REPORT.json")
    parser.add_argument("--out")
    parser.add_argument("--update-doc")
    args = parser.parse_args()

    problems = []
    reports = []
    for arg in args.reports:
        label, sep, path = arg.partition("=")
        if not sep or not label or not path:
            parser.error(f"expected LABEL=REPORT.json, got '{arg}'")
        report = load(label, path, problems)
        if report is not None:
            reports.append((label, report))

    markdown = merge(reports, problems) if reports else "(no report could be read)\n"
    if problems:
        markdown += "\nOut of agreement:\n" + "".join(f"- {p}\n" for p in problems)
    else:
        markdown += (f"\nAll {sum(len(r['targets']) for _, r in reports)} target runs on "
                     f"{len(reports)} machines are within tolerance of the float64 "
                     "reference.\n")
    if args.out:
        with open(args.out, "w") as f:
            f.write(markdown)
    else:
        sys.stdout.write(markdown)
    if args.update_doc:
        update_doc(args.update_doc, markdown)
    if problems:
        print(f"merge_check: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
