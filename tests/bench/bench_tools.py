#!/usr/bin/env python3
"""nvqos-bench-tools: nvqos-target + nvqos-load throughput on this host.

Runs nvqos-target and nvqos-load over loopback - by default 4 KiB random reads,
QD 64 over 2 I/O queues for 10 s - and prints IOPS (goal: >= 100k on a 2-core
host running both), MiB/s, latency p50/p99/p99.9 and CPU per I/O: user+system
time of BOTH processes (from wait4 rusage) divided by the I/Os completed.

A benchmark, not a test: it prints figures (and writes them with --json FILE);
it exits non-zero only when a run fails, never on a slow number.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

TARGET_BIN = "$<TARGET_FILE:nvqos-target>"
LOAD_BIN = "$<TARGET_FILE:nvqos-load>"
SUBNQN = "nqn.2024-01.io.nvqos:bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nvqos-target exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nvqos-target not listening on port {port} after {timeout} s")


def cpu_seconds(rusage):
    return rusage.ru_utime + rusage.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", default="10s", help="load duration (default 10s)")
    ap.add_argument("--qd", type=int, default=64, help="queue depth per I/O queue (default 64)")
    ap.add_argument("--queues", type=int, default=2, help="I/O queues (default 2)")
    ap.add_argument("--bs", default="4k", help="block size (default 4k)")
    ap.add_argument("--rw", default="randread", help="workload (default randread)")
    ap.add_argument("--target-threads", type=int, default=1, help="nvqos-target worker threads (default 1)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    ap.add_argument("--target-bin", default=TARGET_BIN)
    ap.add_argument("--load-bin", default=LOAD_BIN)
    args = ap.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nvqos-bench-tools-") as tmp:
        cfg = os.path.join(tmp, "target.json")
        with open(cfg, "w") as f:
            json.dump({"listen": f"127.0.0.1:{port}", "threads": args.target_threads,
                       "subsystems": [{"nqn": SUBNQN, "allow_any_host": True,
                                       "namespaces": [{"size": "256M", "block_size": 512}]}]}, f)
        target_log = open(os.path.join(tmp, "target.log"), "w")
        target = subprocess.Popen([args.target_bin, "--config", cfg], stdout=target_log, stderr=subprocess.STDOUT)
        try:
            wait_listening(port, target)
            print(f"nvqos-bench-tools: {args.rw} bs {args.bs} QD {args.qd} x {args.queues} queues for "
                  f"{args.runtime}, nvqos-target ({args.target_threads} thread(s)) and nvqos-load on "
                  f"{os.cpu_count()} CPUs", file=sys.stderr)
            load = subprocess.Popen([args.load_bin, "--target", f"127.0.0.1:{port}", "--subnqn", SUBNQN,
                                     "--rw", args.rw, "--bs", args.bs, "--qd", str(args.qd),
                                     "--queues", str(args.queues), "--runtime", args.runtime, "--json",
                                     "--progress", "on"],
                                    stdout=subprocess.PIPE, text=True)
            out = load.stdout.read()
            _, status, load_ru = os.wait4(load.pid, 0)
            load.returncode = os.waitstatus_to_exitcode(status)
            if load.returncode != 0:
                print(out, file=sys.stderr)
                raise RuntimeError(f"nvqos-load exited with {load.returncode}")
        finally:
            target.terminate()
            try:
                _, status, target_ru = os.wait4(target.pid, 0)
            except ChildProcessError:
                target_ru = None
            target_log.close()
        if target_ru is None:
            raise RuntimeError("could not collect nvqos-target's resource usage")

    report = json.loads(out)
    job = report["jobs"][0]
    ios = sum(op["ios"] for op in job["ops"].values())
    iops = sum(op["iops"] for op in job["ops"].values())
    mib = sum(op["mib_per_s"] for op in job["ops"].values())
    op = next(iter(job["ops"].values()))
    lat = op["latency_us"]
    load_cpu = cpu_seconds(load_ru)
    target_cpu = cpu_seconds(target_ru)
    figures = {
        "workload": {"rw": args.rw, "bs": args.bs, "qd": args.qd, "queues": args.queues,
                     "runtime": args.runtime, "target_threads": args.target_threads,
                     "cpus": os.cpu_count()},
        "ios": ios,
        "elapsed_s": job["elapsed_s"],
        "iops": iops,
        "mib_per_s": mib,
        "latency_us": {k: lat[k] for k in ("min", "p50", "p90", "p99", "p99.9", "max")},
        "cpu_s": {"load": load_cpu, "target": target_cpu},
        "cpu_us_per_io": {"load": load_cpu / ios * 1e6, "target": target_cpu / ios * 1e6,
                          "total": (load_cpu + target_cpu) / ios * 1e6},
        "goal_iops": 100000,
    }
    print(f"IOPS            {iops:12.0f}   (goal >= 100000: {'met' if iops >= 100000 else 'NOT met'})")
    print(f"throughput      {mib:12.1f}   MiB/s")
    print(f"latency p50     {lat['p50']:12.1f}   us")
    print(f"latency p99     {lat['p99']:12.1f}   us")
    print(f"latency p99.9   {lat['p99.9']:12.1f}   us")
    print(f"CPU per IO      {figures['cpu_us_per_io']['total']:12.2f}   us CPU/IO "
          f"(nvqos-load {figures['cpu_us_per_io']['load']:.2f}, nvqos-target {figures['cpu_us_per_io']['target']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError) as e:
        print(f"nvqos-bench-tools: {e}", file=sys.stderr)
        sys.exit(1)
