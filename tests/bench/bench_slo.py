#!/usr/bin/env python3
"""nvqos-bench-slo: the latency-SLO controller (issue 11) in the noisy-neighbour topology.

Reuses the isolation scenario (scripts/nvqos_isolation.py: target -- 1 Gbit/s router -- initiator, one
nvqos-target, gold QD1 4 KiB random reads, bronze QD32 128 KiB reads + writes, an agent on each host).

  1. gold alone, no agent: gold's p99 (median of its 1 s windows) -> the objective, 2x it
  2. bronze alone with the agents: what bronze gets of the link (Mbit/s on the wire, reads direction)
  3. a sweep of static bronze ceilings (agents, no objective): per ceiling, gold's compliance (share of
     1 s windows whose p99 meets the objective) and bronze's rate; the best static ceiling is the one
     with the most bronze among those with compliance >= 95%
  4. the controller: gold declares "p99 read <= objective", bronze has no static ceiling; gold runs
     for the case's length, bronze 8 s longer. Prints gold's compliance, bronze's rate beside gold
     against the best static, the effective ceilings over time (both agents, every 250 ms), and how
     long after gold stops bronze is back at 95% of its rate alone.

A benchmark, not a test: it prints figures and exits non-zero only when a run fails. Needs root.
"""
import argparse
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import nvqos_isolation as iso  # noqa: E402

TAIL_S = 8.0  # bronze keeps running this long after gold stops


def policy(params, interface, bronze_ceiling_mbit=None, objective_us=None):
    p = iso.agent_policy(params, interface)
    gold, bronze = p["classes"]
    if bronze_ceiling_mbit:
        bronze["ceiling_mbit_s"] = bronze_ceiling_mbit
    if objective_us:
        gold["objectives"] = [{"op": "read", "quantile": 0.99, "max_latency_us": round(objective_us, 1)}]
        p["slo_controller"] = {"interval_ms": 250}
    return p


class Agent(iso.Agent):
    """iso.Agent with a policy of our own (the scenario's classes, plus a ceiling or an objective)."""

    def __init__(self, ns, interface, bins, params, workdir, name, policy_doc):
        saved = iso.agent_policy
        iso.agent_policy = lambda _params, _interface: policy_doc
        try:
            super().__init__(ns, interface, bins, params, workdir, name)
        finally:
            iso.agent_policy = saved

    def sample(self, name, **labels):
        for n, l, v in iso.parse_metrics(self.metrics()):
            if n == name and all(l.get(k) == w for k, w in labels.items()):
                return v
        return None


def start_load(topo, bins, workdir, tenant, jobs, trace=None):
    path = os.path.join(workdir, f"jobs-{tenant}.json")
    with open(path, "w") as f:
        json.dump({"jobs": jobs}, f)
    argv = ["ip", "netns", "exec", topo.ini, *iso.REALTIME, bins.load, "--job-file", path, "--json"]
    if trace:
        argv += ["--trace", trace]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, what):
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"nvqos-load for {what} exited with {proc.returncode}: {err[-2000:]}")
    return json.loads(out[out.find("{"):])


def gold_windows(trace, objective_us):
    """(compliance over 1 s windows, [p99 per window]) from nvqos-load's per-I/O trace."""
    rows = [(int(r["complete_ns"]), (int(r["complete_ns"]) - int(r["submit_ns"])) / 1000.0)
            for r in csv.DictReader(open(trace))]
    if not rows:
        return 0.0, []
    t0 = rows[0][0]
    windows = {}
    for t, lat in rows:
        windows.setdefault((t - t0) // 1_000_000_000, []).append(lat)
    full = [sorted(v) for k, v in sorted(windows.items()) if k < max(windows)]  # the last one is partial
    p99s = [w[min(len(w) - 1, int(0.99 * len(w)))] for w in full]
    met = sum(1 for p in p99s if p <= objective_us) if objective_us else 0
    return (met / len(p99s) if p99s else 0.0), p99s


def bronze_bytes(agents):
    """Bronze's wire bytes sent by each host: reads leave the target, writes the initiator."""
    return sum(a.sample("nvqos_tenant_bytes_total", tenant="bronze", direction="egress") or 0 for a in agents)


def read_bytes(agents):
    return agents[0].sample("nvqos_tenant_bytes_total", tenant="bronze", direction="egress") or 0


def run_case(topo, bins, params, workdir, runtime, agents, objective_us=None, tail=0.0, progress=print):
    """Gold for `runtime`, bronze for runtime + tail; returns figures and a 250 ms timeline."""
    trace = os.path.join(workdir, "trace-gold.csv")
    gold_jobs, bronze_jobs = iso.tenant_jobs("nvqos", runtime)["gold"], iso.tenant_jobs("nvqos", runtime + tail)["bronze"]
    bronze = start_load(topo, bins, workdir, "bronze", bronze_jobs) if agents is not None else None
    gold = start_load(topo, bins, workdir, "gold", gold_jobs, trace)
    timeline, t0, gold_stop = [], time.monotonic(), None
    start_bytes = (bronze_bytes(agents), time.monotonic()) if agents else None
    during = None
    while (bronze or gold).poll() is None or gold.poll() is None:
        time.sleep(0.25)
        now = time.monotonic() - t0
        if agents:
            point = {"t": round(now, 2), "read_bytes": read_bytes(agents), "bronze_bytes": bronze_bytes(agents)}
            for a in agents:
                point[f"ceiling_{a.name}"] = a.sample("nvqos_class_effective_ceiling_bits_per_second", **{"class": "bronze"})
            timeline.append(point)
        if gold_stop is None and gold.poll() is not None:
            gold_stop = now
            if agents:
                during = ((bronze_bytes(agents) - start_bytes[0]) * 8 / (time.monotonic() - start_bytes[1]))
    finish(gold, "gold")
    if bronze:
        finish(bronze, "bronze")
    compliance, p99s = gold_windows(trace, objective_us)
    return {"compliance": compliance, "gold_p99s_us": p99s, "bronze_bps": during, "timeline": timeline,
            "gold_stop_s": gold_stop}


def rate_series(timeline, key):
    """(t, bits/s over the last second) from cumulative byte samples every 250 ms."""
    out = []
    for i in range(4, len(timeline)):
        a, b = timeline[i - 4], timeline[i]
        out.append((b["t"], (b[key] - a[key]) * 8 / (b["t"] - a["t"])))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("NVQOS_BUILD_DIR", "build"))
    ap.add_argument("--runtime", type=iso.parse_duration, default=10.0, help="length of each case (default 10s)")
    ap.add_argument("--sweep", default="800,600,400,200", help="static bronze ceilings to try, Mbit/s")
    ap.add_argument("--json", metavar="FILE", help="write every figure and the timeline here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-slo: needs root (network namespaces, qdiscs, BPF)")
    bins = iso.Binaries(args.build_dir)
    params = iso.Params(runtime_s=args.runtime)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    results = {"params": params.as_dict(), "kernel": os.uname().release, "cpus": os.cpu_count()}
    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="nvqos-bench-slo-")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        topo = stack.enter_context(iso.Topology(params))
        for tenant, addresses in (("gold", [iso.TGT_GOLD]), ("bronze", [iso.TGT_BRONZE])):
            target = iso.Target(topo, bins, workdir, tenant, addresses)
            stack.callback(target.stop)

        def agents_with(**kw):
            case_stack = contextlib.ExitStack()
            agents = []
            for ns, dev, name in ((topo.tgt, topo.tgt_if, "target"), (topo.ini, topo.ini_if, "initiator")):
                a = Agent(ns, dev, bins, params, workdir, name, policy(params, dev, **kw))
                case_stack.callback(a.stop)
                agents.append(a)
            return agents, case_stack

        say(f"1. gold alone, {args.runtime:g} s")
        solo = run_case(topo, bins, params, workdir, args.runtime, None)
        solo_p99 = sorted(solo["gold_p99s_us"])[len(solo["gold_p99s_us"]) // 2]
        objective = 2 * solo_p99
        results["solo_p99_us"], results["objective_us"] = solo_p99, objective
        say(f"   gold's p99 (median of 1 s windows) {solo_p99:.0f} us -> objective p99 <= {objective:.0f} us")

        say(f"2. bronze alone with the agents, {args.runtime:g} s")
        agents, case_stack = agents_with()
        with case_stack:
            b0, t0 = read_bytes(agents), time.monotonic()
            bronze = start_load(topo, bins, workdir, "bronze", iso.tenant_jobs("capacity", args.runtime)["bronze"])
            finish(bronze, "bronze")
            alone_read_bps = (read_bytes(agents) - b0) * 8 / (time.monotonic() - t0)
        results["bronze_alone_read_bps"] = alone_read_bps
        say(f"   bronze's reads alone: {alone_read_bps / 1e6:.0f} Mbit/s")

        results["sweep"] = []
        for ceiling in [None] + [int(c) for c in args.sweep.split(",") if c]:
            say(f"3. static bronze ceiling {ceiling or 'none'} Mbit/s, {args.runtime:g} s")
            agents, case_stack = agents_with(bronze_ceiling_mbit=ceiling)
            with case_stack:
                r = run_case(topo, bins, params, workdir, args.runtime, agents, objective)
            results["sweep"].append({"ceiling_mbit": ceiling, "compliance": r["compliance"], "bronze_bps": r["bronze_bps"]})
            say(f"   gold compliance {100 * r['compliance']:.0f}%, bronze {r['bronze_bps'] / 1e6:.0f} Mbit/s")
        ok = [s for s in results["sweep"] if s["compliance"] >= 0.95]
        best = max(ok, key=lambda s: s["bronze_bps"]) if ok else None
        results["best_static"] = best

        say(f"4. the controller: objective p99 read <= {objective:.0f} us, {args.runtime:g} s + {TAIL_S:g} s bronze alone")
        agents, case_stack = agents_with(objective_us=objective)
        with case_stack:
            r = run_case(topo, bins, params, workdir, args.runtime, agents, objective, tail=TAIL_S)
            slo_state = subprocess.run([os.path.join(os.path.abspath(args.build_dir), "agent", "nvqosctl"), "--socket",
                                        os.path.join(workdir, "agent-target.sock"), "slo"],
                                       text=True, capture_output=True).stdout
        results["controller"] = {k: r[k] for k in ("compliance", "bronze_bps", "gold_stop_s", "timeline", "gold_p99s_us")}
        regained = None
        for t, bps in rate_series(r["timeline"], "read_bytes"):
            if t > r["gold_stop_s"] and bps >= 0.95 * alone_read_bps:
                regained = t - r["gold_stop_s"]
                break
        results["controller"]["regained_s"] = regained

    print(f"\nLatency SLO controller: gold QD1 4 KiB random reads beside bronze QD32 128 KiB reads + writes, "
          f"{params.bottleneck_mbit} Mbit/s bottleneck, agents' link {params.capacity_mbit} Mbit/s, "
          f"{args.runtime:g} s per case (kernel {results['kernel']}, {results['cpus']} CPUs)")
    print(f"gold alone: p99 {solo_p99:.0f} us; objective p99 read <= {objective:.0f} us (2x)\n")
    print(f"{'bronze ceiling':>22} {'gold compliance':>16} {'bronze Mbit/s':>14}   (bronze: wire bits of its reads and "
          f"writes, both directions, while gold runs)")
    for s in results["sweep"]:
        name = f"static {s['ceiling_mbit']}" if s["ceiling_mbit"] else "none (priority only)"
        print(f"{name:>22} {100 * s['compliance']:>15.0f}% {s['bronze_bps'] / 1e6:>14.0f}")
    c = results["controller"]
    print(f"{'SLO controller':>22} {100 * c['compliance']:>15.0f}% {c['bronze_bps'] / 1e6:>14.0f}")
    if best:
        print(f"\nbest static ceiling meeting the objective in >= 95% of 1 s windows: "
              f"{best['ceiling_mbit'] or 'none'} -> bronze {best['bronze_bps'] / 1e6:.0f} Mbit/s; controller: "
              f"{100 * c['bronze_bps'] / best['bronze_bps']:.0f}% of it (target >= 80%), "
              f"gold compliance {100 * c['compliance']:.0f}% (target >= 95%)")
    else:
        print("\nno static ceiling of the sweep met the objective in >= 95% of 1 s windows")
    print(f"gold stopped at {c['gold_stop_s']:.1f} s; bronze's reads back at 95% of their rate alone "
          + (f"{c['regained_s']:.2f} s later (target <= 5 s)" if c["regained_s"] is not None else "NOT within the run"))
    print("\neffective bronze ceiling (Mbit/s) over time, target / initiator agent:")
    for p in c["timeline"][::4]:
        ct, ci = p.get("ceiling_target"), p.get("ceiling_initiator")
        fmt = lambda v: f"{v / 1e6:7.0f}" if v is not None else "      -"  # noqa: E731
        mark = " <- gold stops" if c["gold_stop_s"] and abs(p["t"] - c["gold_stop_s"]) < 0.5 else ""
        print(f"  t={p['t']:5.1f} s {fmt(ct)} {fmt(ci)}{mark}")
    print("\nnvqosctl slo (target) at the end:\n" + slo_state)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
