#!/usr/bin/env python3
"""Enforcement accuracy: configured vs achieved egress bandwidth ceilings, and the achieved rate
over time around a live reload that changes the ceiling. nvqos-target in one namespace with the
agent on its interface (reads: the data leaves the target, where the ceiling applies), nvqos-load
128 KiB random reads at QD16 from the other, one tenant in a class with only a ceiling. Achieved
rate: the agent's own egress wire-byte counter of the tenant (IP bytes, each segment's headers
included; the ceiling counts the same bytes plus the Ethernet header) over the window. IOPS
ceilings are measured where the kernel has sch_fq (EDT); elsewhere the report says they were not.
Not a test: it prints figures. Needs root."""
import argparse, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (Agent, BackgroundLoad, Target, VethLab, build_dir, machine, metric_values, progress,  # noqa: E402
                      run_load, write_json)

BUILD = build_dir("$<TARGET_FILE_DIR:nvqos-agent>/..")
LINK_MBIT = 10000


def policy(lab, ceiling_mbit=None, ceiling_iops=None):
    cls = {"name": "capped", "priority": 4}
    if ceiling_mbit:
        cls["ceiling_mbit_s"] = ceiling_mbit
    if ceiling_iops:
        cls["ceiling_iops"] = ceiling_iops
    return {"version": 1, "links": [{"interface": lab.server_if, "capacity_mbit_s": LINK_MBIT}],
            "classes": [cls],
            "tenants": [{"name": "bulk", "class": "capped", "match": [{"remote": f"{lab.client_ip}/32"}]}]}


def egress_sample(agent):
    """(tenant's egress wire bytes, when the agent read them): the agent's own read time, so rates
    do not alias against its telemetry interval."""
    text = agent.metrics()
    got = metric_values(text, "nvqos_tenant_bytes_total", tenant="bulk", direction="egress")
    at = metric_values(text, "nvqos_telemetry_last_read_timestamp_seconds")
    return (got[0][1] if got else 0.0), (at[0][1] if at else time.time())


def mechanism(agent):
    got = metric_values(agent.metrics(), "nvqos_qos_mechanism_info", direction="egress")
    return got[0][0].get("mechanism") if got else "unknown"


def rate_over(agent, seconds, interval=0.25):
    """(t, Mbit/s) samples of the tenant's egress wire rate, one per agent read, for `seconds`."""
    out, t0 = [], time.time()
    last_b, last_t = egress_sample(agent)
    while time.time() - t0 < seconds:
        time.sleep(interval)
        b, t = egress_sample(agent)
        if t <= last_t:
            continue  # the agent has not read the kernel again yet
        out.append((time.time() - t0, (b - last_b) * 8 / (t - last_t) / 1e6))
        last_b, last_t = b, t
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=BUILD)
    ap.add_argument("--window", type=float, default=10, help="measurement window per ceiling, s")
    ap.add_argument("--quick", action="store_true", help="2 s windows (smoke run)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-enforcement: needs root (network namespaces, qdiscs, BPF)")
    window = 2 if args.quick else args.window
    build = os.path.abspath(args.build_dir)
    results = {"machine": machine(), "window_s": window, "ceilings": []}
    load = "--rw randread --bs 128k --qd 16"
    with VethLab("e", net=207) as lab, Target(build, lab), \
            Agent(build, lab, side="server", config=policy(lab, ceiling_mbit=50), port=9469,
                  extra_args=["--telemetry-interval", "250ms"]) as agent:
        results["mechanism"] = mechanism(agent)
        for ceiling in (50, 200, 500):
            agent.write_config(policy(lab, ceiling_mbit=ceiling))
            agent.reload()
            progress(f"bandwidth ceiling {ceiling} Mbit/s: {window:g} s window after 1 s of warm-up")
            bg = BackgroundLoad(build, lab, f"{load} --runtime {window + 2}s")
            time.sleep(1.0)
            b0, t0 = egress_sample(agent)
            time.sleep(window)
            b1, t1 = egress_sample(agent)
            achieved = (b1 - b0) * 8 / (t1 - t0) / 1e6
            bg.join()
            results["ceilings"].append({"limit": "egress bandwidth", "configured": ceiling, "achieved": achieved,
                                        "unit": "Mbit/s"})
        if results["mechanism"] == "edt":
            for iops in (1000, 10000):
                agent.write_config(policy(lab, ceiling_iops=iops))
                agent.reload()
                progress(f"IOPS ceiling {iops}: 4 KiB random reads at QD16 for {window:g} s")
                report = run_load(build, lab, f"--rw randread --bs 4k --qd 16 --runtime {window:g}s")
                results["ceilings"].append({"limit": "IOPS", "configured": iops, "unit": "IOPS",
                                            "achieved": report["jobs"][0]["ops"]["read"]["iops"]})
        else:
            results["iops_not_measured"] = (f"egress mechanism {results['mechanism']}: IOPS ceilings are paced "
                                            "with EDT, which needs sch_fq")
        progress("live reload: ceiling 200 -> 400 Mbit/s in the middle of a run")
        agent.write_config(policy(lab, ceiling_mbit=200))
        agent.reload()
        span = 4 if args.quick else 10
        bg = BackgroundLoad(build, lab, f"{load} --runtime {span + 1}s")
        time.sleep(0.5)
        before = rate_over(agent, span / 2)
        agent.write_config(policy(lab, ceiling_mbit=400))
        agent.reload()
        after = rate_over(agent, span / 2)
        bg.join()
        t = [s[0] for s in before] + [span / 2 + s[0] for s in after]
        results["reload_series"] = {"t_s": t, "rate": [s[1] for s in before + after], "unit": "Mbit/s",
                                    "ceiling": [200] * len(before) + [400] * len(after), "reload_at_s": span / 2}
        settled = next((s[0] for s in after if abs(s[1] - 400) <= 0.05 * 400), None)
        results["reload_settled_s"] = settled
    results["description"] = (
        f"Egress mechanism: {results['mechanism']}. One tenant, 128 KiB random reads at QD16; achieved = the "
        f"agent's egress wire-byte counter over a {window:g} s window. After the live reload the rate was within "
        f"5% of the new ceiling {'after %.2f s' % settled if settled is not None else 'never in the window'}."
        + (f" IOPS ceilings not measured: {results['iops_not_measured']}." if "iops_not_measured" in results else ""))
    print(f"\nEnforcement (kernel {results['machine']['kernel']}, mechanism {results['mechanism']})")
    print(f"{'limit':18} {'configured':>12} {'achieved':>12} {'error':>8}")
    for c in results["ceilings"]:
        print(f"{c['limit']:18} {c['configured']:8g} {c['unit']} {c['achieved']:8.1f} {c['unit']} "
              f"{(c['achieved'] - c['configured']) / c['configured'] * 100:+7.1f}%")
    print(results["description"])
    write_json(args.json, results)


if __name__ == "__main__":
    main()
