"""Per-command NVMe/TCP latencies from a packet capture, read with tshark's NVMe/TCP dissector.

Each I/O command is timed from the frame carrying its capsule to the frame carrying its completion:
a CapsuleResp, or a C2HData PDU with the SUCCESS flag (a read may complete without a CapsuleResp).
Frame times rather than tshark's nvme.cmd_latency, which counts the admin queue's Async Event
Requests and times a capsule spanning frames from the frame that completes it; only I/O queues
(qid > 0) count. Shared by the lab's commands scenario and the agent-vs-capture integration test.
"""
import collections
import subprocess

OPS = {0x01: "write", 0x02: "read"}
FIELDS = ["frame.time_epoch", "tcp.stream", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "nvme-tcp.type",
          "nvme-tcp.cmd.qid", "nvme.cmd.cid", "nvme.cmd.opc", "nvme.cqe.cid", "nvme-tcp.cmd.cid",
          "nvme-tcp.flags.pdu.data_success"]
CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = 4, 5, 6, 7, 9


def frames(pcap, ports):
    cmd = ["tshark", "-r", str(pcap), "-Y", "nvme-tcp", "-T", "fields", "-E", "aggregator=,", "-E", "occurrence=a"]
    for port in ports:
        cmd += ["-d", f"tcp.port=={port},nvme-tcp"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cols = line.split("\t")
        cols += [""] * (len(FIELDS) - len(cols))
        yield {f: (c.split(",") if c else []) for f, c in zip(FIELDS, cols)}


def command_latencies(pcap, ports, tenant_of):
    """{(tenant, op): [seconds]} for read and write commands on I/O queues, and the number of
    capsules left out because they shared a frame with Fabrics commands. tenant_of(frame) names the
    tenant of a capsule's frame (its ip.src/ip.dst/tcp.srcport/tcp.dstport lists), or None."""
    pending = collections.defaultdict(collections.deque)  # (stream, cid) -> (time, tenant, op)
    result, skipped = collections.defaultdict(list), 0
    for fr in frames(pcap, ports):
        t = float(fr["frame.time_epoch"][0])
        stream = fr["tcp.stream"][0]
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
                tenant = tenant_of(fr)
                if qid > 0 and opc in OPS and tenant is not None:
                    pending[(stream, cid)].append((t, tenant, OPS[opc]))
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
            queue = pending.get((stream, int(cid, 0)))
            if queue:
                t0, tenant, op = queue.popleft()
                result[(tenant, op)].append(t - t0)
    return result, skipped


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def subnqn_by_stream(pcap, ports):
    """{tcp.stream: subsystem NQN} from each connection's Fabrics Connect command."""
    cmd = ["tshark", "-r", str(pcap), "-Y", "nvme.fabrics.cmd.connect.data.subnqn", "-T", "fields",
           "-e", "tcp.stream", "-e", "nvme.fabrics.cmd.connect.data.subnqn"]
    for port in ports:
        cmd += ["-d", f"tcp.port=={port},nvme-tcp"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {cols[0]: cols[1] for cols in (line.split("\t") for line in out.splitlines()) if len(cols) >= 2}
