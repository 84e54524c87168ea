#!/usr/bin/env python3
"""Throughput cost of nvqos-agent: iperf3 (TCP to the NVMe/TCP port 4420, so every packet is an
NVMe/TCP flow's) and nvqos-load 128 KiB reads through a veth pair between two network namespaces,
without and with the agent attached (no limits configured), alternating runs in one invocation.
Client and server are pinned to different CPUs. Prints each run, the medians and the ratio
with/without (goal >= 97%). Not a test: it prints figures. Needs root."""
import argparse, json, os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (Agent, Target, VethLab, build_dir, machine, metric_values, progress, run_load, sh,  # noqa: E402
                      write_json)

# CMake writes the build directory in here when it generates build/tests/bench/nvqos-bench-throughput.
BUILD = build_dir("$<TARGET_FILE_DIR:nvqos-agent>/..")


def iperf_run(lab, seconds):
    srv = subprocess.Popen(lab.in_ns("server", f"taskset -c 1 iperf3 -s -1 -p 4420 -B {lab.server_ip}"), shell=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    out = sh(lab.in_ns("client", f"taskset -c 0 iperf3 -c {lab.server_ip} -p 4420 -t {seconds} -J"))
    srv.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def load_run(build, lab, seconds):
    with Target(build, lab, cpu=1):
        report = run_load(build, lab, f"--rw randread --bs 128k --qd 16 --runtime {seconds}s", cpu=0)
    return report["jobs"][0]["ops"]["read"]["mib_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=BUILD)
    ap.add_argument("--runs", type=int, default=3, help="runs per case (alternating)")
    ap.add_argument("--seconds", type=int, default=5, help="length of one run, s")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-load", action="store_true", help="iperf3 only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-throughput: needs root (network namespaces, BPF)")
    build = os.path.abspath(args.build_dir)
    results = {"machine": machine(), "runs": args.runs, "seconds": args.seconds, "cases": {}}
    with VethLab("th", net=203) as lab:
        cases = [("iperf3 TCP to port 4420", "Gbit/s", lambda: iperf_run(lab, args.seconds))]
        if not args.skip_load:
            cases.append(("nvqos-load 128 KiB randread QD16", "MiB/s", lambda: load_run(build, lab, args.seconds)))
        for name, unit, run in cases:
            without, with_agent = [], []
            for i in range(args.runs):
                progress(f"[{name}] run {i + 1}/{args.runs} without agent")
                without.append(run())
                progress(f"[{name}] run {i + 1}/{args.runs} with agent")
                with Agent(build, lab, side="server", cpu=0) as agent:
                    with_agent.append(run())
                    time.sleep(1.2)
                    counted = metric_values(agent.metrics(), "nvqos_tenant_payload_bytes_total", tenant="default",
                                            direction="ingress")
                if not counted or counted[0][1] == 0:
                    raise RuntimeError("the agent counted nothing: the benchmark would measure an idle agent")
            ratio = statistics.median(with_agent) / statistics.median(without)
            results["cases"][name] = {"unit": unit, "without": without, "with": with_agent, "ratio": ratio}

    print(f"\nThroughput with nvqos-agent attached vs without (kernel {results['machine']['kernel']}, "
          f"{results['machine']['cpus']} CPUs, client CPU 0, server CPU 1, {args.runs} x {args.seconds} s each, medians)")
    print(f"{'case':36} {'without':>12} {'with':>12} {'ratio':>8}  goal")
    for name, c in results["cases"].items():
        ok = "PASS" if c["ratio"] >= 0.97 else "MISS"
        print(f"{name:36} {statistics.median(c['without']):9.2f} {c['unit']:>2} "
              f"{statistics.median(c['with']):9.2f} {c['unit']:>2} {c['ratio'] * 100:7.1f}%  >= 97% {ok}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
