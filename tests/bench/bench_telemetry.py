#!/usr/bin/env python3
"""Telemetry accuracy: the agent's kernel-timed command latency quantiles beside nvqos-load's own
measurement of the same commands, by both of nvqos-load's clocks: the kernel clock (--latency-clock
kernel: the capsule's TX stamp to the completion's RX stamp, the span the agent times) and the app clock
(send call to completion parsed in user space). Two tenants, told apart by the initiator's source address:
gold (QD1 4 KiB random reads) and bronze (QD8 64 KiB random reads and writes), run at the same time
against nvqos-target with an emulated device time; each tenant connects to its own target address.
The agent runs on the initiator side, so both measure the same commands; the app clock adds the
initiator's own wake-up and syscall time. Prints, per tenant and op, p50, p99 and p99.9 of the agent
and of both clocks, with the agent's difference from each. Not a test: it prints figures. Needs root."""
import argparse, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (Agent, Target, VethLab, build_dir, machine, metric_values, progress,  # noqa: E402
                      run_loads_together, write_json)

BUILD = build_dir("$<TARGET_FILE_DIR:nvqos-agent>/..")
QUANTILES = [("p50", "0.5"), ("p99", "0.99"), ("p99.9", "0.999")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=BUILD)
    ap.add_argument("--seconds", type=int, default=20, help="length of the run, s (< 60: the agent's window)")
    ap.add_argument("--service-time", default="exp:mean=300us", help="nvqos-target --service-time")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-telemetry: needs root (network namespaces, BPF)")
    build = os.path.abspath(args.build_dir)
    results = {"machine": machine(), "seconds": args.seconds, "service_time": args.service_time, "tenants": {}}
    with VethLab("t", net=204, extra_server_addrs=2) as lab:
        gold_ip, bronze_ip = lab.extra_server_ips
        config = {"version": 1, "tenants": [
            {"name": "gold", "match": [{"remote": f"{gold_ip}/32"}]},
            {"name": "bronze", "match": [{"remote": f"{bronze_ip}/32"}]}]}
        with Target(build, lab, extra_args=["--service-time", args.service_time]), \
                Agent(build, lab, side="client", config=config) as agent:
            jobs = {"gold": (gold_ip, "--rw randread --bs 4k --qd 1"),
                    "bronze": (bronze_ip, "--rw randrw --bs 64k --qd 8")}
            progress(f"gold and bronze for {args.seconds} s against nvqos-target (service time {args.service_time})")
            reports, errors = run_loads_together(
                build, lab, {name: (ip, f"{spec} --runtime {args.seconds}s --latency-clock kernel")
                             for name, (ip, spec) in jobs.items()})
            if errors:
                raise RuntimeError("; ".join(errors))
            time.sleep(1.5)  # the agent reads the kernel's counters once per telemetry interval (1 s)
            metrics = agent.metrics()
    for tenant, report in reports.items():
        for op, stats in report["jobs"][0]["ops"].items():
            agent_q = {}
            for label, q in QUANTILES:
                got = metric_values(metrics, "nvqos_nvme_command_latency_quantile_seconds", tenant=tenant, op=op,
                                    role="initiator", quantile=q)
                agent_q[label] = got[0][1] * 1e6 if got else None
            count = metric_values(metrics, "nvqos_nvme_commands_total", tenant=tenant, op=op, role="initiator")
            results["tenants"].setdefault(tenant, {})[op] = {
                "load_us": {label: stats["kernel_latency_us"][label] for label, _ in QUANTILES},
                "load_app_us": {label: stats["app_latency_us"][label] for label, _ in QUANTILES},
                "kernel_clock": stats["kernel_clock"],
                "agent_us": agent_q, "load_ios": stats["ios"], "agent_commands": count[0][1] if count else None}
    print(f"\nCommand latency: nvqos-load vs nvqos-agent (initiator side), {args.seconds} s, service time "
          f"{args.service_time}, kernel {results['machine']['kernel']}")
    print(f"{'tenant':8} {'op':6} {'quantile':8} {'kernel µs':>10} {'app µs':>10} {'agent µs':>10} "
          f"{'vs kernel':>9} {'vs app':>8}   IOs load/agent")

    def diff(a, b):
        return f"{(a - b) / b * 100:+7.1f}%" if a is not None and b else "    n/a"

    for tenant, ops in results["tenants"].items():
        for op, r in ops.items():
            for label, _ in QUANTILES:
                kq, pq, aq = r["load_us"][label], r["load_app_us"][label], r["agent_us"][label]
                agent_ios = "n/a" if r["agent_commands"] is None else f"{r['agent_commands']:.0f}"
                shown = float("nan") if aq is None else aq
                print(f"{tenant:8} {op:6} {label:8} {kq:10.1f} {pq:10.1f} {shown:10.1f} {diff(aq, kq):>9} "
                      f"{diff(aq, pq):>8}   {r['load_ios']}/{agent_ios}")
            print(f"{tenant:8} {op:6} kernel clock: {r['kernel_clock']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
