#!/usr/bin/env python3
"""nvqos-bench-isolation: figure 3 of the benchmark report (issue 12), isolation.

Runs the noisy-neighbour scenario of scripts/nvqos_isolation.py (the same code as scripts/demo.sh and
the isolation integration test): gold (QD1 4 KiB random reads) alone, bronze alone (the capacity),
gold beside bronze without nvqos, and with nvqos (agents on target and initiator; the mechanism they
choose: HTB here, EDT where the kernel has sch_fq; gold alone is measured with them attached too),
all in one invocation through a 1 Gbit/s
bottleneck. Prints gold's p50/p99/p99.9 and bronze's MiB/s per case, the ratios, and gold's latency
distribution; with --json writes every figure plus gold's per-I/O latency samples and CDF points
(for plots); with --plot draws the CDFs (needs python3-matplotlib).

A benchmark, not a test: it prints figures and exits non-zero only when a run fails. Needs root.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import nvqos_isolation as iso  # noqa: E402

QUANTILES = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)


def description(p):
    """How the figures were measured, for the report (tests/bench/report.py prints it)."""
    return (f"Three namespaces in a line, target -- router -- initiator. The router is the bottleneck: a TBF of "
            f"{p.bottleneck_mbit} Mbit/s on its egress each way, with a {p.router_burst_bytes // 1024} KiB bucket "
            f"(more than a 64 KiB GSO packet, so a sender under the rate passes without waiting) and a "
            f"{p.router_buffer_bytes // 1024} KiB queue (a shallow switch port). Each tenant's volume has its own "
            f"nvqos-target process (RAM namespace, service time {p.service_time}), as a storage server serves "
            f"queues from their own cores. Gold: QD1 4 KiB random reads. Bronze: QD32 128 KiB "
            f"random reads and QD32 128 KiB random writes (two jobs, so each direction is loaded on its own). Each "
            f"tenant has its own nvqos-load; target and load generators run at `chrt -f 10` (the host is shared). "
            f"Cases of {p.runtime_s:g} s each in one run: gold alone, bronze alone (the capacity the bottleneck really "
            f"gives), both without nvqos, then gold alone and both with nvqos: an agent on the target (shapes reads) "
            f"and on the initiator (shapes writes) with `capacity_mbit_s` {p.capacity_mbit} and two classes, gold priority 0 guaranteed "
            f"{p.gold_guarantee_mbit} Mbit/s, bronze priority 7. Gold's latency is nvqos-load's (capsule sent to "
            f"completion parsed); the CDF is of every gold I/O. Bronze's effect is each case with bronze against gold "
            f"alone on the same system (with nvqos: the agents attached). \"Queued at router\" is the TBF's overlimits: "
            f"packets that waited at the bottleneck; with nvqos next to none do: the queue is nvqos's.")


def quantile(sorted_samples, q):
    return sorted_samples[min(len(sorted_samples) - 1, int(q * len(sorted_samples)))]


def cdf_points(samples, points=200):
    """[[latency_us, fraction <= it]] at evenly spaced ranks plus the tail ranks, for plotting."""
    s = sorted(samples)
    n = len(s)
    ranks = sorted({min(n - 1, int(n * i / points)) for i in range(points)} |
                   {min(n - 1, int(n * q)) for q in (0.99, 0.995, 0.999, 0.9995, 0.9999)} | {n - 1})
    return [[s[r], (r + 1) / n] for r in ranks]


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results["cases"]:
        if "cdf" in r:
            xs, ys = zip(*r["cdf"])
            ax.plot(xs, ys, label=iso.CASES[r["case"]])
    ax.set_xscale("log")
    ax.set_xlabel("gold read latency (µs, log scale)")
    ax.set_ylabel("fraction of reads")
    ax.set_title(f"gold QD1 4 KiB reads beside bronze, 1 Gbit/s bottleneck\n"
                 f"nvqos: {iso.format_mechanism(results.get('mechanism'))}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("NVQOS_BUILD_DIR", "build"))
    ap.add_argument("--runtime", type=iso.parse_duration, default=10.0, help="length of each case (default 10s)")
    ap.add_argument("--quick", action="store_true", help="2 s per case: checks that the benchmark runs (CI smoke)")
    ap.add_argument("--shaper", choices=("nvqos", "tc"), default="nvqos",
                    help="nvqos (the agents) or tc (a hand-made HTB with the same classes, for reference)")
    ap.add_argument("--json", metavar="FILE", help="write figures, samples and CDF points here")
    ap.add_argument("--plot", metavar="FILE.png", help="draw gold's latency CDFs (python3-matplotlib)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-isolation: needs root (network namespaces, qdiscs, BPF)")
    params = iso.Params(runtime_s=2.0 if args.quick else args.runtime, shaper=args.shaper)
    results = iso.run_scenario(iso.Binaries(args.build_dir), params,
                               progress=lambda s: print(s, file=sys.stderr, flush=True))
    results["description"] = description(params)
    for r in results["cases"]:
        if r.get("gold_samples_us"):
            r["cdf"] = cdf_points(r["gold_samples_us"])

    print(f"\nIsolation: gold QD1 4 KiB random reads beside bronze QD32 128 KiB reads + writes, "
          f"{params.bottleneck_mbit} Mbit/s bottleneck, {params.runtime_s:g} s per case "
          f"(kernel {results['kernel']}, {results['cpus']} CPUs)")
    print(iso.format_table(results))
    print(f"\ngold's read latency distribution (µs, from {sum(len(r.get('gold_samples_us', [])) for r in results['cases'])} "
          f"per-I/O samples of nvqos-load's trace)")
    print(f"{'case':22} " + " ".join(f"{'p' + format(q * 100, 'g'):>8}" for q in QUANTILES) + f" {'max':>8}")
    for r in results["cases"]:
        s = sorted(r.get("gold_samples_us", []))
        if s:
            print(f"{iso.CASES[r['case']]:22} " + " ".join(f"{quantile(s, q):8.0f}" for q in QUANTILES)
                  + f" {s[-1]:8.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
        print(f"\nraw results: {args.json}")
    if args.plot:
        try:
            plot(results, args.plot)
            print(f"plot: {args.plot}")
        except ImportError:
            print(f"no plot: {sys.executable} cannot import matplotlib (Debian's python3-matplotlib, which "
                  f"scripts/install-deps.sh installs, is for /usr/bin/python3)")


if __name__ == "__main__":
    main()
