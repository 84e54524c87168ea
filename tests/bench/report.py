#!/usr/bin/env python3
"""Writes the benchmark report (Markdown with PNG plots) from the JSON files the benchmark scripts
wrote into one results directory. A section whose results are missing says so instead of showing
old figures. Usage: report.py RESULTS_DIR OUT_MD [--img-dir DIR]"""
import argparse, datetime, json, os, statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(results, name):
    path = os.path.join(results, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class Report:
    def __init__(self, out_md, img_dir):
        self.lines, self.out_md, self.img_dir = [], out_md, img_dir
        os.makedirs(img_dir, exist_ok=True)

    def add(self, *lines):
        self.lines.extend(lines)

    def table(self, header, rows):
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for r in rows:
            self.add("| " + " | ".join(str(c) for c in r) + " |")
        self.add("")

    def plot(self, fig, name, alt):
        path = os.path.join(self.img_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        rel = os.path.relpath(path, os.path.dirname(os.path.abspath(self.out_md)))
        self.add(f"![{alt}]({rel})", "")

    def missing(self, what, command):
        self.add(f"_Not measured in this run_ (`{command}` wrote no results).", "")

    def write(self):
        with open(self.out_md, "w") as f:
            f.write("\n".join(self.lines).rstrip() + "\n")


def section_bpf(r, d):
    r.add("## 1. Per-packet cost of the BPF programs", "",
          "`BPF_PROG_TEST_RUN` with repeat, median of runs; `above floor` is the cost above an empty program "
          "of the same type measured the same way in the same run (single-shot rows: one run per distinct "
          "packet, for state that a repeat would hide).", "")
    if not d:
        return r.missing("bpf", "nvqos-bench-bpf")
    rows = [x for x in d["rows"] if x["ports"] != "hash"]
    r.table(["program", "packet", "method", "ns/packet", "above floor", "goal"],
            [[x["program"], x["packet"], x["method"], f"{x['ns_per_pkt']:.0f} ns", f"{x['ns_above_floor']:.0f} ns",
              "–" if x["goal_ns_above_floor"] is None else
              f"≤ {x['goal_ns_above_floor']:.0f} ns {'✓' if x['pass'] else '✗'}"] for x in rows])
    shown = [x for x in rows if x["method"] == "repeat" and not x["program"].startswith("bench_")]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.2))
    ax.barh([f"{x['program']}: {x['packet']}" for x in shown], [x["ns_above_floor"] for x in shown])
    ax.set_xlabel("ns per packet above the empty program")
    ax.invert_yaxis()
    r.plot(fig, "bench-bpf.png", "per-packet cost")


def section_throughput(r, d):
    r.add("## 2. Throughput with the agent attached", "",
          "Two namespaces joined by a veth pair, client and server pinned to different CPUs, the agent on the "
          "server's interface with the built-in observe-only policy; runs alternate without/with the agent; "
          "medians. Goal: at most 3% lost.", "")
    if not d:
        return r.missing("throughput", "nvqos-bench-throughput")
    rows = []
    for name, c in d["cases"].items():
        rows.append([name, f"{statistics.median(c['without']):.2f} {c['unit']}",
                     f"{statistics.median(c['with']):.2f} {c['unit']}", f"{c['ratio'] * 100:.1f}%",
                     "✓" if c["ratio"] >= 0.97 else "✗ (goal ≥ 97%)"])
    r.table(["case", "without agent", "with agent", "ratio", "goal"], rows)
    fig, ax = plt.subplots(figsize=(6, 2.5))
    names = list(d["cases"])
    ax.barh(names, [d["cases"][n]["ratio"] * 100 for n in names])
    ax.axvline(97, color="red", linestyle="--", label="goal 97%")
    ax.set_xlabel("throughput with agent / without (%)")
    ax.legend()
    r.plot(fig, "bench-throughput.png", "throughput ratio")


def section_isolation(r, d):
    r.add("## 3. Isolation: gold's latency beside a bulk tenant", "",
          "The noisy-neighbour scenario of `scripts/nvqos_isolation.py` (the demo's and the isolation test's "
          "code): target -- router (1 Gbit/s bottleneck) -- initiator; gold QD1 4 KiB random reads, bronze "
          "QD32 128 KiB reads and writes; cases of equal length in one run. Latency is nvqos-load's.", "")
    if not d:
        return r.missing("isolation", "nvqos-bench-isolation")
    if d.get("description"):
        r.add(d["description"], "")
    names = {"solo": "gold alone", "capacity": "bronze alone", "shared": "gold + bronze, no nvqos",
             "solo_nvqos": "gold alone, nvqos", "nvqos": "gold + bronze, nvqos"}
    baseline = {"shared": "solo", "nvqos": "solo_nvqos"}
    rows = []
    for c in d["cases"]:
        g, b = c.get("gold"), c.get("bronze")
        rows.append([names.get(c["case"], c["case"])] +
                    ([f"{g['latency_us'][q]:.0f} µs" for q in ("p50", "p99", "p99.9")] if g else ["–"] * 3) +
                    [f"{b['mib_per_s']:.1f} MiB/s ({b['read_mib_per_s']:.1f} + {b['write_mib_per_s']:.1f})"
                     if b else "–",
                     f"{sum(v['overlimits'] for v in c.get('router', {}).values())}"])
    r.table(["case", "gold p50", "gold p99", "gold p99.9", "bronze (read + write)", "queued at router (pkts)"], rows)
    s = d.get("summary", {})
    for case in ("shared", "nvqos"):
        if f"gold_p99_inflation_{case}" in s:
            line = f"- {names[case]}: gold p99 = {s[f'gold_p99_inflation_{case}']:.2f} × {names[baseline[case]]}"
            if f"bronze_share_of_unused_{case}" in s:
                line += f"; bronze gets {s[f'bronze_share_of_unused_{case}'] * 100:.0f}% of the capacity gold leaves unused"
            r.add(line)
    if "gold_p99_agent_cost_alone" in s:
        r.add(f"- the agents' own cost to gold alone: p99 {s['gold_p99_agent_cost_alone']:.2f} × without them")
    mech = d.get("mechanism")
    r.add("", f"Mechanism in the nvqos case: {json.dumps(mech) if mech else 'not reported'}.", "")
    with_cdf = [c for c in d["cases"] if c.get("cdf")]
    if with_cdf:
        fig, ax = plt.subplots(figsize=(7, 4))
        for c in with_cdf:
            ax.plot([p[0] for p in c["cdf"]], [p[1] for p in c["cdf"]], label=names.get(c["case"], c["case"]))
        ax.set_xscale("log")
        ax.set_xlabel("gold read latency (µs)")
        ax.set_ylabel("fraction of reads ≤ latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        r.plot(fig, "bench-isolation-cdf.png", "gold latency CDF")


def section_enforcement(r, d):
    r.add("## 4. Enforcement accuracy", "")
    if not d:
        return r.missing("enforcement", "nvqos-bench-enforcement")
    if d.get("description"):
        r.add(d["description"], "")
    r.table(["limit", "configured", "achieved", "error"],
            [[c["limit"], f"{c['configured']:g} {c['unit']}", f"{c['achieved']:.1f} {c['unit']}",
              f"{(c['achieved'] - c['configured']) / c['configured'] * 100:+.1f}%"] for c in d["ceilings"]])
    series = d.get("reload_series")
    if series:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(series["t_s"], series["rate"], label="achieved")
        ax.step(series["t_s"], series["ceiling"], where="post", linestyle="--", label="configured ceiling")
        ax.axvline(series["reload_at_s"], color="grey", linestyle=":", label="live reload")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(series["unit"])
        ax.legend()
        r.plot(fig, "bench-enforcement-reload.png", "rate around a live reload")


def section_telemetry(r, d):
    r.add("## 5. Telemetry accuracy: agent vs load generator", "")
    if not d:
        return r.missing("telemetry", "nvqos-bench-telemetry")
    r.add(f"Two tenants at once for {d['seconds']} s against nvqos-target (device time `{d['service_time']}`); the "
          "agent on the initiator's interface. nvqos-load reports both of its clocks (`--latency-clock kernel`): "
          "the kernel clock times each command from the kernel's TX stamp of its capsule to the RX stamp of its "
          "completion, the span the agent times on the wire; the app clock from the send call to the completion "
          "parsed in user space, which adds the initiator's own wake-up and syscall time. Goal: the agent within "
          "5% or 20 µs of the kernel clock.", "")
    rows, labels, diffs = [], [], []
    for tenant, ops in d["tenants"].items():
        for op, x in ops.items():
            for q in ("p50", "p99", "p99.9"):
                lq, aq = x["load_us"][q], x["agent_us"][q]
                app = x.get("load_app_us", {}).get(q)
                app_cell = "–" if app is None else f"{app:.1f} µs"
                if aq is None:
                    rows.append([tenant, op, q, f"{lq:.1f} µs", app_cell, "–", "–", "–", "–"])
                    continue
                diff = aq - lq
                ok = abs(diff) <= max(0.05 * lq, 20)
                vs_app = "–" if not app else f"{(aq - app) / app * 100:+.1f}%"
                rows.append([tenant, op, q, f"{lq:.1f} µs", app_cell, f"{aq:.1f} µs", f"{diff / lq * 100:+.1f}%",
                             vs_app, "✓" if ok else "✗"])
                labels.append(f"{tenant} {op} {q}")
                diffs.append(diff / lq * 100)
            rows.append([tenant, op, "commands", x["load_ios"], "", "–" if x["agent_commands"] is None
                         else f"{x['agent_commands']:.0f}", "", "", ""])
    r.table(["tenant", "op", "quantile", "nvqos-load kernel clock", "nvqos-load app clock", "agent",
             "agent vs kernel clock", "agent vs app clock", "within 5% / 20 µs of the kernel clock"], rows)
    if diffs:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(diffs) + 1.2))
        ax.barh(labels, diffs)
        ax.axvline(-5, color="red", linestyle="--")
        ax.axvline(5, color="red", linestyle="--")
        ax.set_xlabel("agent − nvqos-load kernel clock (% of it)")
        ax.invert_yaxis()
        r.plot(fig, "bench-telemetry.png", "telemetry accuracy")


def section_control_plane(r, d):
    r.add("## 6. Control plane at scale", "",
          "Reload: `POST /v1/reload` of a config in which every tenant's rule changed, timed by the client "
          "(median of 3). Scrape: `GET /metrics`, median of 5. Flows: one segment from each of N distinct "
          "peers to port 4420, each opening a flow-table entry.", "")
    if not d:
        return r.missing("control_plane", "nvqos-bench-control-plane")
    r.table(["tenants", "flows", "start-up", "reload", "scrape", "/metrics size", "agent RSS"],
            [[c["tenants"], f"{c['flows_opened']:.0f}", f"{c['startup_s'] * 1e3:.0f} ms", f"{c['reload_s'] * 1e3:.0f} ms",
              f"{c['scrape_s'] * 1e3:.1f} ms", f"{c['scrape_bytes'] / 1024:.0f} KiB",
              f"{c['rss_bytes'] / 2**20:.1f} MiB"] for c in d["cases"]])
    base = [c for c in d["cases"] if c["flows_requested"] == 0]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([c["tenants"] for c in base], [c["reload_s"] * 1e3 for c in base], marker="o", label="reload")
    ax.plot([c["tenants"] for c in base], [c["scrape_s"] * 1e3 for c in base], marker="o", label="scrape")
    ax.set_xscale("log")
    ax.set_xlabel("tenants")
    ax.set_ylabel("ms")
    ax.legend()
    r.plot(fig, "bench-control-plane.png", "reload and scrape time")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results")
    ap.add_argument("out_md")
    ap.add_argument("--img-dir")
    args = ap.parse_args()
    img_dir = args.img_dir or os.path.join(os.path.dirname(os.path.abspath(args.out_md)), "img")
    meta = load(args.results, "run") or {}
    r = Report(args.out_md, img_dir)
    r.add("# Benchmarks", "",
          "Written by `scripts/bench.sh` (do not edit by hand; run it again). Every figure is a ratio measured "
          "side by side in the same run, or a per-packet cost beside a baseline measured in the same run: "
          "absolute numbers move between machines and runs, the ratios are what to read.", "")
    m = meta.get("machine", {})
    r.add(f"Run: {meta.get('date', datetime.date.today().isoformat())}, commit `{meta.get('commit', '?')}`, "
          f"kernel {m.get('kernel', '?')}, {m.get('cpus', '?')} × {m.get('cpu_model', '?')}"
          f"{', quick mode' if meta.get('quick') else ''}, {meta.get('duration_s', '?')} s in all. "
          f"Raw results: [{meta.get('results_json', 'results.json')}]({meta.get('results_json', 'results.json')}).", "")
    if meta.get("failed"):
        r.add(f"**Failed in this run:** {', '.join(meta['failed'])} (their sections say so).", "")
    section_bpf(r, load(args.results, "bpf"))
    section_throughput(r, load(args.results, "throughput"))
    section_isolation(r, load(args.results, "isolation"))
    section_enforcement(r, load(args.results, "enforcement"))
    section_telemetry(r, load(args.results, "telemetry"))
    section_control_plane(r, load(args.results, "control_plane"))
    r.write()


if __name__ == "__main__":
    main()
