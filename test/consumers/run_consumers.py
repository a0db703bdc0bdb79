#!/usr/bin/env python3
"""Builds and runs three out-of-tree consumers of bnorm, as an engine would embed it.

1. pkgconfig/: a C99 program compiled with `pkg-config --cflags --libs bnorm` against
   the installed package, and once more linked with the static libbnorm.a through
   `pkg-config --static --libs bnorm` (which needs Requires.private: libhwy, tbb).
2. cmake/: a C++ project, find_package(bnorm 0.1) and target bnorm::bnorm.
3. meson/: a Meson project with bnorm as a subproject (dependency('bnorm') with a
   fallback; the fallback is forced so that no installed bnorm is picked instead).

The package comes from `meson install --destdir` of the build directory this runs from
(no rebuild, no network), into a temporary directory: pkg-config finds it through
PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR (the staged-install mechanism: the .pc files
keep prefix=/usr/local or whatever was configured), CMake through CMAKE_PREFIX_PATH (the
package is relocatable). The programs run with LD_LIBRARY_PATH on the staged libdir;
each makes real bnorm calls and checks the values. Exit status: 0 passed, 1 failed,
77 skipped (a cross or sanitizer build, or a missing tool).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))


class Failure(Exception):
    pass


def run(cmd, env=None, cwd=None, what=None):
    """Runs cmd, echoing it; returns its stdout; raises Failure with the output if it fails."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if p.returncode != 0:
        raise Failure(f"{what or cmd[0]} failed (exit {p.returncode}):\n{p.stdout}")
    return p.stdout


def step(name):
    print(f"\n== {name}", flush=True)
    return time.monotonic()


def done(t0):
    print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)


def check_loaded_from(exe, libdir, env):
    """Checks with ldd that exe resolves libbnorm.so.0 inside libdir."""
    if shutil.which("ldd") is None:
        return
    out = run(["ldd", exe], env=env, what="ldd")
    line = next((l for l in out.splitlines() if "libbnorm.so" in l), "")
    if os.path.realpath(libdir) not in line and libdir not in line:
        raise Failure(f"{exe} does not load libbnorm from {libdir}:\n{out}")
    print("   " + line.strip())


def pkgconfig_consumer(a, tmp, root, libdir, env):
    t0 = step("C program through pkg-config")
    pc = a.pkg_config
    version = run([pc, "--modversion", "bnorm"], env=env).strip()
    if version != a.version:
        raise Failure(f"pkg-config --modversion bnorm: {version}, expected {a.version}")
    requires = run([pc, "--print-requires-private", "bnorm"], env=env).split()
    for dep in ("libhwy", "tbb"):
        if dep not in requires:
            raise Failure(f"bnorm.pc: Requires.private lacks {dep} (has {requires})")
    cflags = shlex.split(run([pc, "--cflags", "bnorm"], env=env))
    libs = shlex.split(run([pc, "--libs", "bnorm"], env=env))
    static_libs = shlex.split(run([pc, "--static", "--libs", "bnorm"], env=env))
    for flag in ("-lhwy", "-ltbb"):
        if flag not in static_libs:
            raise Failure(f"pkg-config --static --libs bnorm lacks {flag}: {static_libs}")
    src = os.path.join(HERE, "pkgconfig", "consumer.c")
    exe = os.path.join(tmp, "pkgconfig_consumer")
    run(a.cc + ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O2", src, "-o", exe]
        + cflags + libs + ["-lm"], env=env, what="compiling the pkg-config consumer")
    check_loaded_from(exe, libdir, env)
    print("   " + run([exe], env=env, what="the pkg-config consumer").strip())
    # The same program with libbnorm.a: -lbnorm becomes -l:libbnorm.a, the private
    # requirements come from the .pc. bnorm.pc does not list the C++ runtime the archive
    # needs (libstdc++): link with the C++ driver, as a C project would have to today.
    static_exe = exe + "_static"
    static_libs = ["-l:libbnorm.a" if f == "-lbnorm" else f for f in static_libs]
    obj = exe + ".o"
    run(a.cc + ["-std=c99", "-O2", "-c", src, "-o", obj] + cflags, env=env,
        what="compiling the pkg-config consumer")
    run(a.cxx + [obj, "-o", static_exe] + static_libs + ["-lm"], env=env,
        what="linking the pkg-config consumer with libbnorm.a")
    out = run(["ldd", static_exe], env=env) if shutil.which("ldd") else ""
    if "libbnorm.so" in out:
        raise Failure(f"{static_exe} still loads libbnorm.so:\n{out}")
    print("   " + run([static_exe], env=env, what="the static pkg-config consumer").strip())
    done(t0)


def cmake_consumer(a, tmp, root, libdir, env):
    t0 = step("C++ project through CMake find_package(bnorm)")
    build = os.path.join(tmp, "cmake-build")
    cmd = [a.cmake, "-S", os.path.join(HERE, "cmake"), "-B", build,
           "-DCMAKE_PREFIX_PATH=" + root, "-DCMAKE_BUILD_TYPE=Release",
           "-DCMAKE_CXX_COMPILER=" + a.cxx[-1]]
    if len(a.cxx) > 1:  # a launcher such as ccache
        cmd.append("-DCMAKE_CXX_COMPILER_LAUNCHER=" + ";".join(a.cxx[:-1]))
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    out = run(cmd, env=env, what="cmake configure")
    print("   " + next((l for l in out.splitlines() if "bnorm " in l), "").strip())
    run([a.cmake, "--build", build, "--parallel", str(a.jobs)], env=env, what="cmake build")
    exe = os.path.join(build, "consumer")
    check_loaded_from(exe, libdir, env)
    print("   " + run([exe], env=env, what="the CMake consumer").strip())
    done(t0)


def meson_consumer(a, tmp, env):
    t0 = step("Meson project with bnorm as a subproject")
    project = os.path.join(tmp, "meson-consumer")
    shutil.copytree(os.path.join(HERE, "meson"), project)
    os.makedirs(os.path.join(project, "subprojects"))
    os.symlink(a.source_root, os.path.join(project, "subprojects", "bnorm"))
    build = os.path.join(project, "build")
    menv = dict(env)
    for var in ("PKG_CONFIG_PATH", "PKG_CONFIG_SYSROOT_DIR", "LD_LIBRARY_PATH"):
        menv.pop(var, None)  # nothing from the staged install
    menv["CC"] = " ".join(shlex.quote(c) for c in a.cc)
    menv["CXX"] = " ".join(shlex.quote(c) for c in a.cxx)
    run(a.meson + ["setup", build, project, "--force-fallback-for=bnorm",
                   "-Dbuildtype=release"], env=menv, what="meson setup")
    run(a.meson + ["compile", "-C", build, "-j", str(a.jobs), "consumer"], env=menv,
        what="meson compile")
    exe = os.path.join(build, "consumer")
    out = run(["ldd", exe], env=menv) if shutil.which("ldd") else ""
    line = next((l for l in out.splitlines() if "libbnorm.so" in l), "")
    if out and os.path.join(build, "subprojects", "bnorm") not in line:
        raise Failure(f"{exe} does not load the subproject's libbnorm:\n{out}")
    if line:
        print("   " + line.strip())
    print("   " + run([exe], env=menv, what="the Meson consumer").strip())
    done(t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-root", required=True, help="the configured bnorm build directory")
    p.add_argument("--source-root", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--libdir", required=True, help="relative to the prefix, as configured")
    p.add_argument("--version", required=True, help="the project version")
    p.add_argument("--meson", default="meson", help="the meson command")
    p.add_argument("--cmake", default="cmake")
    p.add_argument("--pkg-config", default="pkg-config")
    p.add_argument("--cc", default=os.environ.get("CC", "cc"), help="the C compiler command")
    p.add_argument("--cxx", default=os.environ.get("CXX", "c++"), help="the C++ compiler command")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", default="pkgconfig,cmake,meson")
    p.add_argument("--skip", default="", help="a reason to skip (cross or sanitizer build)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args()
    if a.skip:
        print("skipped: " + a.skip)
        return SKIP
    a.meson = shlex.split(a.meson)
    a.cc = shlex.split(a.cc)
    a.cxx = shlex.split(a.cxx)
    only = set(a.only.split(","))
    tools = {"pkgconfig": [a.pkg_config, a.cc[-1], a.cxx[-1]], "cmake": [a.cmake, a.cxx[-1]],
             "meson": [a.meson[0], a.cc[-1]]}
    missing = sorted({t for k in only for t in tools.get(k, []) if shutil.which(t) is None})
    if missing:
        print("skipped: not found: " + ", ".join(missing))
        return SKIP

    t_all = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bnorm-consumers-")
    failed = []
    try:
        t0 = step(f"meson install -C {a.build_root} --destdir {tmp}/stage")
        stage = os.path.join(tmp, "stage")
        run(a.meson + ["install", "-C", a.build_root, "--no-rebuild", "--destdir", stage],
            what="meson install")
        root = stage + a.prefix  # the prefix is absolute
        libdir = os.path.join(root, a.libdir)
        done(t0)
        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = os.pathsep.join(
            [os.path.join(libdir, "pkgconfig")] +
            ([env["PKG_CONFIG_PATH"]] if env.get("PKG_CONFIG_PATH") else []))
        env["PKG_CONFIG_SYSROOT_DIR"] = stage
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [libdir] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        env.pop("MESON_PROJECT_BUILD_ROOT", None)
        consumers = [("pkgconfig", lambda: pkgconfig_consumer(a, tmp, root, libdir, env)),
                     ("cmake", lambda: cmake_consumer(a, tmp, root, libdir, env)),
                     ("meson", lambda: meson_consumer(a, tmp, env))]
        for name, fn in consumers:
            if name not in only:
                continue
            try:
                fn()
            except Failure as e:
                print(f"FAIL ({name}): {e}", flush=True)
                failed.append(name)
    except Failure as e:
        print(f"FAIL: {e}")
        failed.append("install")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all consumers passed'} "
          f"({time.monotonic() - t_all:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
