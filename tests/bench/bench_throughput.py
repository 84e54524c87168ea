#!/usr/bin/env python3
"""Throughput cost of nvqos-agent: iperf3 (TCP to the NVMe/TCP port 4420, so every packet is an
NVMe/TCP flow's) and nvqos-load 128 KiB reads through a veth pair between two network namespaces,
without and with the agent attached (no limits configured), alternating runs in one invocation.
Client and server are pinned to different CPUs. Prints each run, the medians and the ratio
with/without (goal >= 97%). Not a test: it prints figures. Needs root."""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

# CMake writes the build directory in here when it generates build/tests/bench/nvqos-bench-throughput.
_GENERATED_BUILD = "$<TARGET_FILE_DIR:nvqos-agent>/.."
BUILD = os.environ.get("NVQOS_BUILD_DIR") or (
    "build" if _GENERATED_BUILD.startswith("$" + "<") else _GENERATED_BUILD)
NS_SRV, NS_CLI = f"nvqbench-s{os.getpid()}", f"nvqbench-c{os.getpid()}"
SRV_IF, CLI_IF = f"nvqbs{os.getpid() % 10000}", f"nvqbc{os.getpid() % 10000}"
SRV, CLI = "10.203.0.1", "10.203.0.2"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def setup():
    for ns in (NS_SRV, NS_CLI):
        sh(f"ip netns add {ns} && ip -n {ns} link set lo up")
    sh(f"ip link add {SRV_IF} netns {NS_SRV} type veth peer name {CLI_IF} netns {NS_CLI}")
    sh(f"ip -n {NS_SRV} addr add {SRV}/24 dev {SRV_IF} && ip -n {NS_SRV} link set {SRV_IF} up")
    sh(f"ip -n {NS_CLI} addr add {CLI}/24 dev {CLI_IF} && ip -n {NS_CLI} link set {CLI_IF} up")


def teardown():
    for ns in (NS_SRV, NS_CLI):
        subprocess.run(f"ip netns del {ns}", shell=True, capture_output=True)


class Agent:
    """nvqos-agent on the server's interface (both tc hooks), observe-only default policy."""

    def __init__(self, build):
        self.log = tempfile.NamedTemporaryFile(prefix="nvqos-bench-agent", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS_SRV, "taskset", "-c", "0", os.path.join(build, "agent", "nvqos-agent"),
             "--interface", SRV_IF, "--metrics-address", "127.0.0.1:9467"], stdout=self.log, stderr=self.log)
        for _ in range(100):
            if subprocess.run(f"ip netns exec {NS_SRV} curl -sf -o /dev/null http://127.0.0.1:9467/readyz",
                              shell=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("agent did not become ready: " + open(self.log.name).read())

    def metrics(self):
        return sh(f"ip netns exec {NS_SRV} curl -sf http://127.0.0.1:9467/metrics")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        os.unlink(self.log.name)


def iperf_run(seconds):
    srv = subprocess.Popen(f"ip netns exec {NS_SRV} taskset -c 1 iperf3 -s -1 -p 4420 -B {SRV}", shell=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    out = sh(f"ip netns exec {NS_CLI} taskset -c 0 iperf3 -c {SRV} -p 4420 -t {seconds} -J")
    srv.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def load_run(build, seconds):
    tgt = subprocess.Popen(["ip", "netns", "exec", NS_SRV, "taskset", "-c", "1",
                            os.path.join(build, "tools", "target", "nvqos-target"), "--listen", f"{SRV}:4420",
                            "--subsystem", "nqn.2026-11.io.nvqos:bench", "--namespace", "1G:4096",
                            "--allow-any-host"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        out = sh(f"ip netns exec {NS_CLI} taskset -c 0 {os.path.join(build, 'tools', 'load', 'nvqos-load')} "
                 f"--target {SRV}:4420 --subnqn nqn.2026-11.io.nvqos:bench --rw randread --bs 128k --qd 16 "
                 f"--runtime {seconds}s --json --progress off")
    finally:
        tgt.terminate()
        tgt.wait(timeout=10)
    report = json.loads(out)
    text = json.dumps(report)
    m = re.search(r'"mib_per_s"\s*:\s*([0-9.]+)', text) or re.search(r'"MiB_s"\s*:\s*([0-9.]+)', text)
    if not m:
        raise RuntimeError("no throughput in nvqos-load --json output: " + text[:400])
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=BUILD)
    ap.add_argument("--runs", type=int, default=3, help="runs per case (alternating)")
    ap.add_argument("--seconds", type=int, default=5, help="length of one run, s")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-load", action="store_true", help="iperf3 only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nvqos-bench-throughput: needs root (network namespaces, BPF)")
    build = os.path.abspath(args.build_dir)
    results = {"kernel": os.uname().release, "cpus": os.cpu_count(), "cases": {}}
    setup()
    try:
        cases = [("iperf3 TCP to port 4420", "Gbit/s", lambda: iperf_run(args.seconds))]
        if not args.skip_load:
            cases.append(("nvqos-load 128 KiB randread QD16", "MiB/s", lambda: load_run(build, args.seconds)))
        for name, unit, run in cases:
            without, with_agent = [], []
            for i in range(args.runs):
                print(f"[{name}] run {i + 1}/{args.runs} without agent ...", file=sys.stderr, flush=True)
                without.append(run())
                print(f"[{name}] run {i + 1}/{args.runs} with agent ...", file=sys.stderr, flush=True)
                agent = Agent(build)
                try:
                    with_agent.append(run())
                    time.sleep(1.2)
                    counted = re.search(r'nvqos_tenant_payload_bytes_total\{[^}]*tenant="default",direction="ingress"\} (\S+)',
                                        agent.metrics())
                finally:
                    agent.stop()
                if not counted or float(counted.group(1)) == 0:
                    raise RuntimeError("the agent counted nothing: the benchmark would measure an idle agent")
            ratio = statistics.median(with_agent) / statistics.median(without)
            results["cases"][name] = {"unit": unit, "without": without, "with": with_agent, "ratio": ratio}
    finally:
        teardown()

    print(f"\nThroughput with nvqos-agent attached vs without (kernel {results['kernel']}, "
          f"{results['cpus']} CPUs, client CPU 0, server CPU 1, {args.runs} x {args.seconds} s each, medians)")
    print(f"{'case':36} {'without':>12} {'with':>12} {'ratio':>8}  goal")
    for name, c in results["cases"].items():
        ok = "PASS" if c["ratio"] >= 0.97 else "MISS"
        print(f"{name:36} {statistics.median(c['without']):9.2f} {c['unit']:>2} "
              f"{statistics.median(c['with']):9.2f} {c['unit']:>2} {c['ratio'] * 100:7.1f}%  >= 97% {ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
