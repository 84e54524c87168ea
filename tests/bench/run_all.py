#!/usr/bin/env python3
"""Runs every benchmark, collects their JSON into one results file and writes the report.
  run_all.py [--quick] [--only NAME,...] --results DIR --report FILE.md
--quick is the smoke mode (ctest runs it): every benchmark still runs, its numbers mean nothing.
--only runs just those benchmarks and re-renders just their sections of an existing report (and their
entries of the raw file), leaving the other sections' figures as they were.
scripts/bench.sh installs the dependencies, builds and calls this. Needs root."""
import argparse, datetime, glob, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import build_dir, machine, progress  # noqa: E402

BUILD = build_dir("$<TARGET_FILE_DIR:nvqos-agent>/..")


def benches(build, results, quick):
    py = [sys.executable]
    out = lambda name: ["--json", os.path.join(results, name + ".json")]  # noqa: E731
    bpf = [os.path.join(build, "tests", "bench", "nvqos-bench-bpf")]
    if quick:
        return [("bpf", bpf + ["--repeat", "10000", "--runs", "1", "--single-shots", "10"] + out("bpf")),
                ("throughput", py + [f"{HERE}/bench_throughput.py", "--runs", "1", "--seconds", "2"] + out("throughput")),
                ("isolation", py + [f"{HERE}/bench_isolation.py", "--quick"] + out("isolation")),
                ("enforcement", py + [f"{HERE}/bench_enforcement.py", "--quick"] + out("enforcement")),
                ("telemetry", py + [f"{HERE}/bench_telemetry.py", "--seconds", "4"] + out("telemetry")),
                ("control_plane", py + [f"{HERE}/bench_control_plane.py", "--quick"] + out("control_plane")),
                # One scenario: the other runs the same code with another capacity and bronze.
                ("slo", py + [f"{HERE}/bench_slo.py", "--quick", "--scenarios", "priority"] + out("slo"))]
    return [("bpf", bpf + out("bpf")),
            ("throughput", py + [f"{HERE}/bench_throughput.py", "--runs", "3", "--seconds", "5"] + out("throughput")),
            ("isolation", py + [f"{HERE}/bench_isolation.py", "--runtime", "10s"] + out("isolation")),
            ("enforcement", py + [f"{HERE}/bench_enforcement.py"] + out("enforcement")),
            ("telemetry", py + [f"{HERE}/bench_telemetry.py", "--seconds", "30"] + out("telemetry")),
            ("control_plane", py + [f"{HERE}/bench_control_plane.py"] + out("control_plane")),
            ("slo", py + [f"{HERE}/bench_slo.py"] + out("slo"))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=BUILD)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--results", required=True, help="directory for the JSON results (emptied first)")
    ap.add_argument("--report", required=True, help="Markdown report to write (plots go to img/ beside it)")
    ap.add_argument("--raw", help="where to write all raw results as one JSON file (default RESULTS/results.json)")
    ap.add_argument("--only", help="comma-separated benchmarks to run (see benches()); only their report sections "
                    "and raw entries are rewritten")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    os.environ["NVQOS_BUILD_DIR"] = build
    os.makedirs(args.results, exist_ok=True)
    plan = benches(build, args.results, args.quick)
    only = set(args.only.split(",")) if args.only else None
    if only:
        unknown = only - {name for name, _ in plan}
        if unknown:
            sys.exit(f"run_all.py: unknown benchmark {', '.join(sorted(unknown))} "
                     f"(known: {', '.join(name for name, _ in plan)})")
        if not os.path.exists(args.report):
            sys.exit(f"run_all.py --only re-renders sections of an existing report; {args.report} does not exist")
        plan = [(name, cmd) for name, cmd in plan if name in only]
    for old in glob.glob(os.path.join(args.results, "*.json")):
        if not only or os.path.basename(old)[:-5] in only:
            os.unlink(old)
    failed, started = [], time.time()
    for i, (name, cmd) in enumerate(plan, 1):
        progress(f"benchmark {i}/{len(plan)}: {name}")
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
            progress(f"benchmark {name} FAILED")
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "machine": machine(), "quick": args.quick, "duration_s": round(time.time() - started),
            "failed": failed}
    raw = args.raw or os.path.join(args.results, "results.json")
    meta["results_json"] = os.path.relpath(raw, os.path.dirname(os.path.abspath(args.report)))
    with open(os.path.join(args.results, "run.json"), "w") as f:
        json.dump(meta, f, indent=2)
    combined = {os.path.basename(p)[:-5]: json.load(open(p))
                for p in sorted(glob.glob(os.path.join(args.results, "*.json"))) if not p.endswith("/results.json")}
    if only:
        kept = json.load(open(raw)) if os.path.exists(raw) else {}
        combined = dict(kept, **{name: combined[name] for name in only if name in combined})
    # Per-I/O samples stay in the per-benchmark files; the committed raw file keeps their CDF points.
    for case in combined.get("isolation", {}).get("cases", []):
        case.pop("gold_samples_us", None)
    with open(raw, "w") as f:
        json.dump(combined, f, indent=2)
    subprocess.run([sys.executable, f"{HERE}/report.py", args.results, args.report] +
                   (["--only", ",".join(sorted(only))] if only else []), check=True)
    progress(f"report written to {args.report}; raw results in {raw}; "
             f"{meta['duration_s']} s in all")
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
