#!/usr/bin/env python3
"""Host half of the commands scenario (issue 5, scenario 1): per-command latencies from the guest's
capture, read with tshark's NVMe/TCP dissector, beside the agent's latency quantiles.

Each command is timed from the frame carrying its capsule to the frame carrying its completion: a
CapsuleResp, or a C2HData PDU with the SUCCESS flag (a read may complete without a CapsuleResp).
Frame times rather than tshark's nvme.cmd_latency, which counts the admin queue's Async Event
Requests and times a capsule spanning frames from the frame that completes it; only I/O queues
(qid > 0) count. The capture sees each packet on lo once, when it is sent; tc sees it leave at
about that time and arrive later, after the receive backlog's softirq (under TCG: tens of µs,
at times milliseconds). So the agent's initiator view (capsule leaving, completion arriving) reads
the capture's latency plus that delay, its target view (capsule arriving, completion leaving) the
capture's latency minus it: per tenant, op and quantile the capture must lie between the two,
each within 5% or 20 µs, whichever is larger. Appends to out/checks.tsv like the guest's checks.
"""
import collections
import pathlib
import re
import shutil
import subprocess
import sys

PORTS = {4420: "gold", 4421: "bronze"}
OPS = {0x01: "write", 0x02: "read"}
QUANTILES = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)]
FIELDS = ["frame.time_epoch", "tcp.stream", "tcp.srcport", "tcp.dstport", "nvme-tcp.type", "nvme-tcp.cmd.qid",
          "nvme.cmd.cid", "nvme.cmd.opc", "nvme.cqe.cid", "nvme-tcp.cmd.cid", "nvme-tcp.flags.pdu.data_success"]
CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = 4, 5, 6, 7, 9


def frames(pcap):
    cmd = ["tshark", "-r", str(pcap), "-Y", "nvme-tcp", "-T", "fields", "-E", "aggregator=,", "-E", "occurrence=a"]
    for port in PORTS:
        cmd += ["-d", f"tcp.port=={port},nvme-tcp"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cols = line.split("\t")
        cols += [""] * (len(FIELDS) - len(cols))
        yield {f: (c.split(",") if c else []) for f, c in zip(FIELDS, cols)}


def latencies(pcap):
    """{(tenant, op): [seconds]} and the number of capsules that could not be attributed."""
    pending = collections.defaultdict(collections.deque)  # (stream, cid) -> deque of (time, tenant, op)
    result, skipped = collections.defaultdict(list), 0
    for fr in frames(pcap):
        t = float(fr["frame.time_epoch"][0])
        stream = fr["tcp.stream"][0]
        port = int(fr["tcp.dstport"][0]) if int(fr["tcp.dstport"][0]) in PORTS else int(fr["tcp.srcport"][0])
        types = [int(x) for x in fr["nvme-tcp.type"]]
        qids = [int(x, 0) for x in fr["nvme-tcp.cmd.qid"]]
        cmd_cids, opcs = iter(fr["nvme.cmd.cid"]), iter(fr["nvme.cmd.opc"])
        cqe_cids, data_cids = iter(fr["nvme.cqe.cid"]), iter(fr["nvme-tcp.cmd.cid"])
        success = fr["nvme-tcp.flags.pdu.data_success"]
        # Fabrics capsules (Connect, Property Get/Set) carry no nvme.cmd.cid: the lists would not line up.
        if types.count(CAPSULE_CMD) != len(fr["nvme.cmd.cid"]):
            skipped += types.count(CAPSULE_CMD)
            continue
        for i, ty in enumerate(types):
            qid = qids[i] if i < len(qids) else 0
            if ty == CAPSULE_CMD:
                cid, opc = int(next(cmd_cids), 0), int(next(opcs), 0)
                if qid > 0 and opc in OPS:
                    pending[(stream, cid)].append((t, PORTS[port], OPS[opc]))
                continue
            # A PDU whose header ends in a later frame is listed here without its fields; it is
            # dissected again, whole, in the frame that completes it.
            if ty == CAPSULE_RESP:
                cid = next(cqe_cids, None)
            elif ty in (H2C_DATA, C2H_DATA, R2T):
                cid = next(data_cids, None)
                if not (ty == C2H_DATA and i < len(success) and success[i] in ("1", "True")):
                    continue
            else:
                continue
            if cid is None:
                continue
            cid = int(cid, 0)
            queue = pending.get((stream, cid))
            if queue:
                t0, tenant, op = queue.popleft()
                result[(tenant, op)].append(t - t0)
    return result, skipped


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


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


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
        if dropped and int(dropped.group(1)) > 0:
            record("skip", "pcap-latency", f"tcpdump dropped {dropped.group(1)} packets: the capture cannot time every command")
        else:
            samples, skipped = latencies(pcap)
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
