#!/usr/bin/env python3
"""Control-plane cost of nvqos-agent as the policy and the flow table grow: start-up time, reload
time (POST /v1/reload of a changed config, measured by the client), /metrics scrape time and size,
and the agent's resident memory, at 10, 1k and 10k tenants; then the same at 10k tenants with 100k
NVMe/TCP flows in the flow table (one segment each from 100k distinct peer address/port pairs, sent
with a raw socket from the client namespace). Not a test: it prints figures. Needs root."""
import argparse, os, socket, statistics, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Agent, VethLab, build_dir, machine, metric_values, progress, sh, write_json  # noqa: E402

BUILD = build_dir("$<TARGET_FILE_DIR:nvqos-agent>/..")


def policy(tenants, generation):
    """`tenants` tenants, one /32 each in 10.206.128.0/17; `generation` moves every rule by one
    address, so a reload changes every tenant's rule."""
    out = []
    for i in range(tenants):
        host = 128 * 256 + (i + generation) % (127 * 256)
        out.append({"name": f"t{i}", "match": [{"remote": f"10.206.{host // 256}.{host % 256}/32"}]})
    return {"version": 1, "tenants": out, "limits": {"max_flows": 131072}}


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def segment(src, dst, sport, dport):
    """An IPv4/TCP ACK segment with 8 bytes of payload (not a PDU header the walk could use)."""
    payload = b"\0" * 8
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x10, 65535, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def inject_flows(lab, count):
    """Runs this script's raw sender inside the client namespace (a socket lives in the namespace
    of the process that opens it)."""
    sh(lab.in_ns("client", f"{sys.executable} {os.path.abspath(__file__)} --send-flows {count} "
                           f"--to {lab.server_ip}"))


def send_flows(count, dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for i in range(count):
        s.sendto(segment(f"10.206.{128 + i // 60000}.1", dst, 1024 + i % 60000, 4420), (dst, 0))


def scrape(agent, runs=5):
    times, size = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        size = len(agent.metrics())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), size


def measure(build, lab, tenants, flows):
    progress(f"{tenants} tenants, {flows} flows: starting the agent")
    t0 = time.perf_counter()
    with Agent(build, lab, side="server", config=policy(tenants, 0), port=9468) as agent:
        startup = time.perf_counter() - t0
        if flows:
            progress(f"sending {flows} segments from distinct peers")
            inject_flows(lab, flows)
            time.sleep(1.5)  # one telemetry interval
        reloads = []
        for generation in (1, 2, 3):
            agent.write_config(policy(tenants, generation))
            t0 = time.perf_counter()
            agent.reload()
            reloads.append(time.perf_counter() - t0)
        scrape_s, scrape_bytes = scrape(agent)
        opened = sum(v for _, v in metric_values(agent.metrics(), "nvqos_tenant_flows_opened_total"))
        return {"tenants": tenants, "flows_requested": flows, "flows_opened": opened, "startup_s": startup,
                "reload_s": statistics.median(reloads), "scrape_s": scrape_s, "scrape_bytes": scrape_bytes,
                "rss_bytes": agent.rss_bytes()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=BUILD)
    ap.add_argument("--quick", action="store_true", help="10 and 1k tenants, 10k flows")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--send-flows", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--to", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send_flows:
        send_flows(args.send_flows, args.to)
        return
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-control-plane: needs root (network namespaces, BPF)")
    build = os.path.abspath(args.build_dir)
    cases = [(10, 0), (1000, 0), (1000, 10000)] if args.quick else [(10, 0), (1000, 0), (10000, 0), (10000, 100000)]
    results = {"machine": machine(), "cases": []}
    with VethLab("p", net=206) as lab:
        for tenants, flows in cases:
            results["cases"].append(measure(build, lab, tenants, flows))
    print(f"\nControl plane (kernel {results['machine']['kernel']}, {results['machine']['cpus']} CPUs)")
    print(f"{'tenants':>8} {'flows':>8} {'start-up':>9} {'reload':>9} {'scrape':>9} {'/metrics':>10} {'RSS':>9}")
    for c in results["cases"]:
        print(f"{c['tenants']:8d} {c['flows_opened']:8.0f} {c['startup_s'] * 1e3:6.0f} ms {c['reload_s'] * 1e3:6.0f} ms "
              f"{c['scrape_s'] * 1e3:6.1f} ms {c['scrape_bytes'] / 1024:7.0f} KiB {c['rss_bytes'] / 2**20:6.1f} MiB")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
