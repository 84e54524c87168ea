#!/usr/bin/env python3
"""Turns one lab boot's artefacts (out/checks.tsv, out/guest.env, console.log) into result.json.

status: pass  - the scenario ran to its end, recorded at least one passing check and no failure
        fail  - a check failed or the scenario exited non-zero
        skip  - every check was a skip (e.g. the binaries it needs are not built yet)
        error - the guest never reported (boot failure, qemu killed by the timeout, share broken)
"""
import argparse
import json
import pathlib
import sys


def read_env(path):
    env = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key.strip()] = value.strip()
    return env


def read_checks(path):
    checks = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            status, _, rest = line.partition("\t")
            name, _, detail = rest.partition("\t")
            if status:
                checks.append({"name": name, "status": status, "detail": detail})
    return checks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=pathlib.Path)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--accel", required=True)
    ap.add_argument("--qemu-rc", type=int, required=True)
    ap.add_argument("--wall-s", type=float, required=True)
    ap.add_argument("--binaries", default="")
    args = ap.parse_args()

    out = args.run_dir / "out"
    guest = read_env(out / "guest.env")
    checks = read_checks(out / "checks.tsv")
    counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "fail", "skip")}

    reason = ""
    if "scenario_rc" not in guest:
        status = "error"
        reason = ("qemu killed by the boot timeout" if args.qemu_rc in (124, 137)
                  else f"guest never reported (qemu exit {args.qemu_rc}); see console.log")
    elif counts["fail"] or guest["scenario_rc"] != "0":
        status = "fail"
        reason = f"{counts['fail']} check(s) failed, scenario exit {guest['scenario_rc']}"
    elif counts["pass"]:
        status = "pass"
    elif counts["skip"]:
        status = "skip"
        reason = "every check skipped"
    else:
        status = "fail"
        reason = "scenario recorded no checks"

    def seconds(key):
        return float(guest[key]) if key in guest else None

    boot_s, end_s = seconds("init_uptime_s"), seconds("end_uptime_s")
    result = {
        "kernel": args.kernel,
        "kernel_release": guest.get("kernel_release", args.release),
        "scenario": args.scenario,
        "status": status,
        "reason": reason,
        "accel": args.accel,
        "timing_note": "guest clock; TCG runs ~20x slower than native: compare within one run only",
        "boot_to_init_s": boot_s,
        "scenario_s": round(end_s - boot_s, 1) if boot_s is not None and end_s is not None else None,
        "qemu_wall_s": args.wall_s,
        "qemu_rc": args.qemu_rc,
        "binaries": args.binaries.split(),
        "counts": counts,
        "checks": checks,
    }
    (args.run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")

    line = (f"[lab] {args.kernel} {args.scenario}: {status.upper()}"
            f" ({counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped;"
            f" wall {args.wall_s:.0f} s)")
    print(line + (f" — {reason}" if reason else ""), file=sys.stderr)
    for c in checks:
        if c["status"] == "fail":
            print(f"[lab]   FAIL {c['name']}: {c['detail']}", file=sys.stderr)
    if status == "error":
        console = args.run_dir / "console.log"
        if console.exists():
            tail = console.read_text(errors="replace").splitlines()[-25:]
            print("[lab]   console.log (last lines):", file=sys.stderr)
            for t in tail:
                print(f"[lab]   | {t}", file=sys.stderr)


if __name__ == "__main__":
    main()
