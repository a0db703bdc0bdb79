#!/usr/bin/env python3
"""The ABI of libbnorm.so: its dynamic symbol table defines the C API and nothing else.

Lists the defined dynamic symbols (nm -D --defined-only) and fails on any name that does
not start with bnorm_, on a function declared in bnorm.h that is not exported, on an
exported bnorm_ name that bnorm.h does not declare, and (with --soname) on a SONAME other
than the expected one (readelf -d).

usage: symbols_test.py LIBRARY HEADER [--nm NM] [--readelf READELF] [--soname NAME]
"""
import argparse
import re
import subprocess
import sys


def exported(nm, library):
    """Returns {name: nm type letter} of the defined dynamic symbols of library."""
    out = subprocess.run([nm, "-D", "--defined-only", library], check=True,
                         capture_output=True, text=True).stdout
    symbols = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        kind, name = fields[-2], fields[-1]
        symbols[name.split("@")[0]] = kind  # a symbol version would follow '@'
    return symbols


def declared(header):
    """Returns the names of the functions bnorm.h declares (BNORM_API ... bnorm_x(...))."""
    text = open(header, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return set(re.findall(r"\bBNORM_API\b[^;(]*?\b(bnorm_\w+)\s*\(", text))


def soname(readelf, library):
    out = subprocess.run([readelf, "-d", library], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return m.group(1) if m else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("library")
    p.add_argument("header")
    p.add_argument("--nm", default="nm")
    p.add_argument("--readelf", default="readelf")
    p.add_argument("--soname", help="the expected SONAME, e.g. libbnorm.so.0")
    a = p.parse_args()

    symbols = exported(a.nm, a.library)
    api = declared(a.header)
    errors = []
    if not api:
        errors.append(f"{a.header}: no BNORM_API function found (is the pattern stale?)")
    foreign = sorted(n for n in symbols if not n.startswith("bnorm_"))
    for name in foreign:
        errors.append(f"exported but not bnorm_*: {name} ({symbols[name]})")
    for name in sorted(api - symbols.keys()):
        errors.append(f"declared in bnorm.h but not exported: {name}")
    for name in sorted(n for n in symbols.keys() - api if n.startswith("bnorm_")):
        errors.append(f"exported but not declared in bnorm.h: {name} ({symbols[name]})")
    for name in sorted(api & symbols.keys()):
        if symbols[name] not in ("T", "W", "i"):
            errors.append(f"{name}: exported as nm type {symbols[name]}, not as a function")
    if a.soname:
        got = soname(a.readelf, a.library)
        if got != a.soname:
            errors.append(f"SONAME is {got}, expected {a.soname}")

    print(f"{a.library}: {len(symbols)} defined dynamic symbols, "
          f"{len(api)} functions declared in {a.header}")
    for name in sorted(symbols):
        print(f"  {symbols[name]} {name}")
    for e in errors:
        print("FAIL: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
