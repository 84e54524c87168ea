#!/usr/bin/env python3
"""Host half of the commands scenario (issue 5, scenario 1): per-command latencies from the guest's
capture, read with tshark's NVMe/TCP dissector, beside the agent's latency quantiles.

Commands are timed from the capture as tests/support/nvme_pcap.py explains. The capture sees each
packet on lo once, when it is sent; tc sees it leave at about that time and arrive later, after the receive backlog's softirq (under TCG: tens of µs,
at times milliseconds). So the agent's initiator view (capsule leaving, completion arriving) reads
the capture's latency plus that delay, its target view (capsule arriving, completion leaving) the
capture's latency minus it: per tenant, op and quantile the capture must lie between the two,
each within 5% or 20 µs, whichever is larger. Appends to out/checks.tsv like the guest's checks.
"""
import pathlib
import re
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "support"))
from nvme_pcap import command_latencies, quantile, subnqn_by_stream  # noqa: E402

# Both tenants share target port 4420; a connection's tenant is its Connect's subsystem NQN, as the
# agent's "subsystem_nqn" rules see it (commands.sh).
PORTS = [4420]
TENANT_OF_NQN = {"nqn.2026-01.io.nvqos.lab:gold": "gold", "nqn.2026-01.io.nvqos.lab:bronze": "bronze"}
QUANTILES = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)]


def agent_quantiles(metrics_path):
    """{(tenant, op, role, quantile label): seconds} and {(tenant, op): commands as initiator}."""
    q, counts = {}, {}
    labels = {str(v): k for k, v in QUANTILES}
    for line in metrics_path.read_text().splitlines():
        m = re.match(r'(nvqos_nvme_command_latency_quantile_seconds|nvqos_nvme_commands_total)\{([^}]*)\} (\S+)', line)
        if not m:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if m.group(1) == "nvqos_nvme_commands_total":
            if lab.get("role") == "initiator":
                counts[(lab["tenant"], lab["op"])] = float(m.group(3))
        elif lab.get("quantile") in labels:
            q[(lab["tenant"], lab["op"], lab["role"], labels[lab["quantile"]])] = float(m.group(3))
    return q, counts


def main():
    out = pathlib.Path(sys.argv[1]) / "out"
    checks = []

    def record(status, name, detail):
        checks.append(f"{status}\t{name}\t{detail}")
        print(f"{status:4} {name} — {detail}")

    pcap, metrics = out / "commands.pcap", out / "metrics-after.txt"
    if not pcap.exists() or not metrics.exists():
        record("skip", "pcap-latency", "no capture or no metrics came back (the guest half failed earlier)")
    elif not shutil.which("tshark"):
        record("skip", "pcap-latency", "tshark not installed on the host (scripts/install-deps.sh)")
    else:
        stats = (out / "tcpdump-stats.txt").read_text() if (out / "tcpdump-stats.txt").exists() else ""
        dropped = re.search(r"(\d+) packets dropped by kernel", stats)
        captured = re.search(r"(\d+) packets captured", stats)
        received = re.search(r"(\d+) packets received by filter", stats)
        # On lo the filter sees every packet twice (out and in) and tcpdump writes one copy.
        unwritten = int(received.group(1)) - 2 * int(captured.group(1)) if captured and received else 0
        if dropped and int(dropped.group(1)) > 0:
            record("skip", "pcap-latency", f"tcpdump dropped {dropped.group(1)} packets: the capture cannot time every command")
        elif unwritten > 0.01 * int(received.group(1)):
            record("skip", "pcap-latency", f"tcpdump stopped with ~{unwritten // 2} packets unwritten "
                   f"({stats.strip()}): the capture cannot time every command")
        else:
            nqn_of = subnqn_by_stream(pcap, PORTS)
            samples, skipped = command_latencies(
                pcap, PORTS, lambda fr: TENANT_OF_NQN.get(nqn_of.get(fr["tcp.stream"][0], "")))
            streams = {TENANT_OF_NQN.get(n) for n in nqn_of.values()}
            record("pass" if streams == {"gold", "bronze"} else "fail", "pcap-connect-subnqn",
                   f"{len(nqn_of)} connections' Connect commands name the subsystem ({sorted(set(nqn_of.values()))})")
            agent_q, agent_n = agent_quantiles(metrics)
            for (tenant, op), values in sorted(samples.items()):
                values.sort()
                n_agent = agent_n.get((tenant, op))
                if n_agent is not None and int(n_agent) != len(values):
                    record("fail", f"pcap-count-{tenant}-{op}", f"capture times {len(values)} commands, agent {n_agent:.0f}")
                else:
                    record("pass", f"pcap-count-{tenant}-{op}", f"{len(values)} commands in the capture and the agent")
                for label, qv in QUANTILES:
                    cap_us = quantile(values, qv) * 1e6
                    initiator = agent_q.get((tenant, op, "initiator", label))
                    target = agent_q.get((tenant, op, "target", label))
                    name = f"pcap-latency-{tenant}-{op}-{label}"
                    if initiator is None or target is None:
                        record("fail", name, f"the agent exports no {label} for {tenant}/{op} in both roles")
                        continue
                    tol = max(0.05 * cap_us, 20.0)
                    ok = target * 1e6 - tol <= cap_us <= initiator * 1e6 + tol
                    record("pass" if ok else "fail", name,
                           f"agent as target {target * 1e6:.1f} µs <= capture {cap_us:.1f} µs <= agent as initiator "
                           f"{initiator * 1e6:.1f} µs (±{tol:.1f} µs)")
            if not samples:
                record("fail", "pcap-latency", "no I/O command timed in the capture")
            if skipped:
                print(f"note: {skipped} capsules in frames with Fabrics commands were not attributed")
    with open(out / "checks.tsv", "a") as f:
        for c in checks:
            f.write(c + "\n")


if __name__ == "__main__":
    main()
