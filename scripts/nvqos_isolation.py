#!/usr/bin/env python3
"""The noisy-neighbour scenario: one module shared by scripts/demo.sh (the README's main job), the
integration test tests/integration/isolation_test.py and the benchmark tests/bench/bench_isolation.py.

Three hosts (network namespaces) in a line:

    target ==== router ==== initiator
    nvqos-target   1 Gbit/s each way   nvqos-load: gold (QD1 4 KiB random reads)
    nvqos-agent    (TBF: the switch)   nvqos-agent  bronze (QD32 128 KiB reads + QD32 128 KiB writes)

The router is the 1 Gbit/s bottleneck (a TBF in each direction with a switch-like buffer). Without
nvqos the queue forms there, in one FIFO shared by both tenants, and gold's 4 KiB reads wait behind
bronze's 128 KiB transfers. With nvqos an agent runs on each host with the link capacity configured a
little under the bottleneck, so the queue forms in the agent's HTB instead, where gold (priority 0,
with a guarantee) goes first and bronze (priority 7) takes everything gold leaves. Reads are shaped at
the target's egress, writes at the initiator's.

Cases (one run of each tenant's nvqos-load per case, all the same length, in one invocation so that
ratios are comparable; `--cases` picks some):
  solo        gold alone, no agent
  capacity    bronze alone, no agent: what the bottleneck really gives (MiB/s)
  shared      gold + bronze, no agent
  solo_nvqos  gold alone, an agent with QoS classes on the target and on the initiator
  nvqos       gold + bronze, the same agents
Bronze's effect on gold is each shared case against gold alone on the same system (BASELINE); the
agents' own cost to gold is solo_nvqos against solo.

Run directly (root): scripts/nvqos_isolation.py [--runtime 5s] [--json FILE] [--demo].
"""
import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SUBNQN = "nqn.2026-11.io.nvqos:isolation"
PORT = 4420
METRICS_PORT = 9465

# Addresses. The target serves gold and bronze on different addresses so that the initiator's agent,
# whose "remote" is the target, tells the tenants apart as the target's agent does by initiator address.
TGT_NET, INI_NET = "10.78.1", "10.78.2"
TGT_GOLD, TGT_BRONZE, TGT_GW = f"{TGT_NET}.1", f"{TGT_NET}.11", f"{TGT_NET}.254"
INI_GOLD, INI_BRONZE, INI_GW = f"{INI_NET}.2", f"{INI_NET}.3", f"{INI_NET}.254"

# nvqos-target and nvqos-load run at a real-time priority: on a shared host the scheduler's delays
# would otherwise dominate gold's tail in every case and hide what the network does. (Gold at a
# higher priority than bronze made no difference measurable here.)
REALTIME = ("chrt", "-f", "10")

# Case id -> what the tables call it.
CASES = {"solo": "gold alone", "capacity": "bronze alone", "shared": "gold + bronze",
         "solo_nvqos": "gold alone, nvqos", "nvqos": "gold + bronze, nvqos"}
# Cases that run with nvqos enforcing; the agents start before the first and stay for the rest.
NVQOS_CASES = ("solo_nvqos", "nvqos")
# What each inflation is measured against: bronze's effect on gold with the system otherwise the same
# (without nvqos: gold alone without agents; with nvqos: gold alone with the agents attached).
BASELINE = {"shared": "solo", "nvqos": "solo_nvqos"}


class Params:
    """Everything a run depends on; defaults are the measured ones (docs/benchmarks.md, "Isolation")."""

    def __init__(self, **kw):
        self.runtime_s = 5.0
        self.bottleneck_mbit = 1000       # router TBF rate, each direction
        self.router_burst_bytes = 256 * 1024   # TBF bucket: above the largest GSO packet, so it never splits one
        self.router_buffer_bytes = 512 * 1024  # TBF queue: ~4 ms at 1 Gbit/s, a shallow switch port
        self.capacity_mbit = 950          # nvqos link capacity: 5% under the bottleneck, so the queue is nvqos's
        self.gold_guarantee_mbit = 400    # gold's guaranteed rate, above what gold uses alone (~250 Mbit/s)
        self.service_time = "fixed:50us"  # nvqos-target's emulated device time per command
        # RPS CPU masks of the receive queues: target, router (both sides), initiator. The hosts with
        # an agent need each stream in order (see Topology); the router forwards on the sending CPU.
        # Target on CPU 0 and initiator on CPU 1 spread the work (all four on CPU 0 made gold's p99
        # with nvqos 1.69x its p99 alone, against 1.34x, in one comparison on the shared 2-CPU host).
        self.rps = ("1", "0", "0", "2")
        self.shaper = "nvqos"             # "nvqos" (the agents) or "tc" (a hand-made HTB: a reference)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown parameter {k}")
            setattr(self, k, v)

    def as_dict(self):
        return dict(vars(self))


class Binaries:
    def __init__(self, build_dir):
        build = os.path.abspath(build_dir)
        self.target = os.path.join(build, "tools", "target", "nvqos-target")
        self.load = os.path.join(build, "tools", "load", "nvqos-load")
        self.agent = os.path.join(build, "agent", "nvqos-agent")
        for path in (self.target, self.load, self.agent):
            if not os.access(path, os.X_OK):
                raise RuntimeError(f"{path} not found: build first (scripts/build.sh) or give --build-dir")


def sh(cmd):
    r = subprocess.run(cmd, shell=True, text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


class Topology:
    """The three namespaces, two veth pairs and the router's bottleneck; removed on exit."""

    def __init__(self, params, tag=None):
        tag = tag or str(os.getpid() % 100000)
        self.p = params
        self.tgt, self.rtr, self.ini = f"nvqiso-t{tag}", f"nvqiso-r{tag}", f"nvqiso-i{tag}"
        self.tgt_if, self.rtr_tif = f"nvqit{tag}", f"nvqirt{tag}"
        self.ini_if, self.rtr_iif = f"nvqii{tag}", f"nvqiri{tag}"

    def __enter__(self):
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _setup(self):
        for ns in (self.tgt, self.rtr, self.ini):
            subprocess.run(f"ip netns del {ns}", shell=True, capture_output=True)
            sh(f"ip netns add {ns} && ip -n {ns} link set lo up")
        sh(f"ip link add {self.tgt_if} netns {self.tgt} type veth peer name {self.rtr_tif} netns {self.rtr}")
        sh(f"ip link add {self.ini_if} netns {self.ini} type veth peer name {self.rtr_iif} netns {self.rtr}")
        for ns, dev, addrs, rps in ((self.tgt, self.tgt_if, (TGT_GOLD, TGT_BRONZE), self.p.rps[0]),
                                    (self.rtr, self.rtr_tif, (TGT_GW,), self.p.rps[1]),
                                    (self.rtr, self.rtr_iif, (INI_GW,), self.p.rps[2]),
                                    (self.ini, self.ini_if, (INI_GOLD, INI_BRONZE), self.p.rps[3])):
            for a in addrs:
                sh(f"ip -n {ns} addr add {a}/24 dev {dev}")
            sh(f"ip -n {ns} link set {dev} up")
            # A veth hands a connection's packets to tc on whichever CPU sent them, out of order across
            # CPUs; on the hosts with an agent each receive queue is steered to one CPU, as RSS does on a
            # NIC, so the agent's PDU walk sees every stream in order.
            sh(f"ip netns exec {ns} sh -c 'echo {rps} > /sys/class/net/{dev}/queues/rx-0/rps_cpus'")
        sh(f"ip netns exec {self.rtr} sysctl -qw net.ipv4.ip_forward=1")
        sh(f"ip -n {self.tgt} route add {INI_NET}.0/24 via {TGT_GW}")
        # Each tenant's initiator reaches the target from its own address.
        sh(f"ip -n {self.ini} route add {TGT_GOLD}/32 via {INI_GW} src {INI_GOLD}")
        sh(f"ip -n {self.ini} route add {TGT_BRONZE}/32 via {INI_GW} src {INI_BRONZE}")
        # The bottleneck: the router's egress both ways. The bucket holds a whole 64 KiB GSO packet with
        # room to spare, so a sender at or under 1 Gbit/s passes without queueing and one above it
        # fills the FIFO behind the bucket.
        for dev in (self.rtr_tif, self.rtr_iif):
            sh(f"tc -n {self.rtr} qdisc add dev {dev} root tbf rate {self.p.bottleneck_mbit}mbit "
               f"burst {self.p.router_burst_bytes} limit {self.p.router_buffer_bytes}")

    def __exit__(self, *exc):
        for ns in (self.ini, self.rtr, self.tgt):
            subprocess.run(f"ip netns del {ns}", shell=True, capture_output=True)

    def router_stats(self):
        """Per direction: bytes sent, packets dropped and overlimits at the bottleneck (cumulative)."""
        out = {}
        for direction, dev in (("reads", self.rtr_iif), ("writes", self.rtr_tif)):
            q = json.loads(sh(f"tc -n {self.rtr} -s -j qdisc show dev {dev}"))[0]
            out[direction] = {"bytes": q.get("bytes", 0), "drops": q.get("drops", 0),
                              "overlimits": q.get("overlimits", 0)}
        return out


class Target:
    """nvqos-target serving `addresses` (port 4420) in the target namespace."""

    def __init__(self, topo, bins, workdir, tenant, addresses):
        self.log = open(os.path.join(workdir, f"target-{tenant}.log"), "w")
        listen = [a for addr in addresses for a in ("--listen", f"{addr}:{PORT}")]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", topo.tgt, *REALTIME, bins.target, *listen, "--subsystem", SUBNQN,
             "--namespace", "1G:4096", "--allow-any-host", "--service-time", topo.p.service_time],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nvqos-target exited ({self.proc.returncode}): "
                                   + open(self.log.name).read())
            if subprocess.run(f"ip netns exec {topo.tgt} ss -Hltn 'src {addresses[-1]}:{PORT}' | grep -q LISTEN",
                              shell=True).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("nvqos-target is not listening after 5 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def agent_policy(params, interface):
    """The QoS policy: one config shape for both hosts. A tenant is matched by the initiator's address
    on the target and by the target's address on the initiator ("remote" is always the other end)."""
    return {
        "version": 1,
        "links": [{"interface": interface, "capacity_mbit_s": params.capacity_mbit}],
        "classes": [
            {"name": "gold", "priority": 0, "guaranteed_mbit_s": params.gold_guarantee_mbit},
            {"name": "bronze", "priority": 7},
        ],
        "tenants": [
            {"name": "gold", "class": "gold", "match": [{"remote": f"{INI_GOLD}/32"}, {"remote": f"{TGT_GOLD}/32"}]},
            {"name": "bronze", "class": "bronze",
             "match": [{"remote": f"{INI_BRONZE}/32"}, {"remote": f"{TGT_BRONZE}/32"}]},
        ],
    }


class Agent:
    """nvqos-agent in one namespace with the QoS policy; stopped (and its qdiscs removed) by stop()."""

    # How often the agent reads its counters; a subclass sampling faster lowers it.
    telemetry_interval = "1s"

    def __init__(self, ns, interface, bins, params, workdir, name):
        self.ns, self.name = ns, name
        self.config = os.path.join(workdir, f"policy-{name}.json")
        with open(self.config, "w") as f:
            json.dump(agent_policy(params, interface), f, indent=2)
        check = subprocess.run([bins.agent, "--validate", "--config", self.config], text=True, capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"nvqos-agent refused the QoS policy: {(check.stderr or check.stdout).strip()}")
        self.log_path = os.path.join(workdir, f"agent-{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, bins.agent, "--interface", interface, "--config", self.config,
             "--metrics-address", f"127.0.0.1:{METRICS_PORT}", "--telemetry-interval", self.telemetry_interval,
             "--admin-socket", os.path.join(workdir, f"agent-{name}.sock")],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(150):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nvqos-agent on the {name} exited ({self.proc.returncode}):\n"
                                   + open(self.log_path).read())
            if self._get("/readyz", quiet=True) is not None:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nvqos-agent on the {name} not ready after 15 s:\n" + open(self.log_path).read())

    def _get(self, path, quiet=False):
        r = subprocess.run(f"ip netns exec {self.ns} curl -sf http://127.0.0.1:{METRICS_PORT}{path}",
                           shell=True, text=True, capture_output=True)
        if r.returncode != 0:
            if quiet:
                return None
            raise RuntimeError(f"GET {path} from the {self.name}'s agent failed: {r.stderr.strip()}")
        return r.stdout

    def metrics(self):
        return self._get("/metrics")

    def mechanisms(self):
        """{direction: "htb" or "htb+edt" ...} from nvqos_qos_mechanism_info."""
        found = {}
        for name, labels, value in parse_metrics(self.metrics()):
            if name == "nvqos_qos_mechanism_info" and value == 1:
                found.setdefault(labels.get("direction", "?"), []).append(labels.get("mechanism", "?"))
        return {d: "+".join(sorted(m)) for d, m in found.items()}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class HandMadeHtb:
    """The reference the agent must match: the HTB an operator would build by hand with tc and u32
    filters (gold by address), the same classes and rates. Used to find the parameters before the
    agent enforced QoS, and by the benchmark as a baseline."""

    def __init__(self, topo, params):
        self.topo = topo
        for ns, dev, gold_peer in ((topo.tgt, topo.tgt_if, INI_GOLD), (topo.ini, topo.ini_if, TGT_GOLD)):
            cap, g = params.capacity_mbit, params.gold_guarantee_mbit
            burst = cap * 125  # 1 ms at the rate
            cmds = [f"qdisc add dev {dev} root handle 1: htb default 20",
                    f"class add dev {dev} parent 1: classid 1:1 htb rate {cap}mbit burst {burst} cburst {burst}",
                    f"class add dev {dev} parent 1:1 classid 1:10 htb rate {g}mbit ceil {cap}mbit "
                    f"burst {burst} cburst {burst} prio 0",
                    f"class add dev {dev} parent 1:1 classid 1:20 htb rate 1mbit ceil {cap}mbit "
                    f"burst {burst} cburst {burst} prio 7",
                    f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip dst {gold_peer}/32 flowid 1:10"]
            for c in cmds:
                sh(f"tc -n {ns} {c}")

    def mechanisms(self):
        return {"egress": "htb (hand-made with tc)"}

    def stop(self):
        for ns, dev in ((self.topo.tgt, self.topo.tgt_if), (self.topo.ini, self.topo.ini_if)):
            subprocess.run(f"tc -n {ns} qdisc del dev {dev} root", shell=True, capture_output=True)


def tenant_jobs(case, runtime_s):
    """{tenant: [nvqos-load jobs]} for a case. Each tenant runs its own nvqos-load, as two applications on
    two hosts would: one event loop for both would make gold's completions wait behind bronze's 128 KiB
    copies, a queue in the load generator rather than in the network."""
    gold = [{"name": "gold", "target": f"{TGT_GOLD}:{PORT}", "subnqn": SUBNQN, "rw": "randread", "bs": "4k",
             "qd": 1, "runtime": runtime_s, "offset": "0", "size": "256m"}]
    bronze = [
        {"name": "bronze-read", "target": f"{TGT_BRONZE}:{PORT}", "subnqn": SUBNQN, "rw": "randread",
         "bs": "128k", "qd": 32, "runtime": runtime_s, "offset": "256m", "size": "256m"},
        {"name": "bronze-write", "target": f"{TGT_BRONZE}:{PORT}", "subnqn": SUBNQN, "rw": "randwrite",
         "bs": "128k", "qd": 32, "runtime": runtime_s, "offset": "512m", "size": "128m"},
    ]
    return {"solo": {"gold": gold}, "solo_nvqos": {"gold": gold},
            "capacity": {"bronze": bronze}}.get(case, {"gold": gold, "bronze": bronze})


def run_load(topo, bins, case, params, workdir, progress):
    """One run of each tenant's nvqos-load, side by side; returns the case's figures and gold's latency
    samples (µs, from nvqos-load's per-I/O trace)."""
    before = topo.router_stats()
    procs = {}
    for tenant, jobs in tenant_jobs(case, params.runtime_s).items():
        jobs_path = os.path.join(workdir, f"jobs-{tenant}.json")
        with open(jobs_path, "w") as f:
            json.dump({"jobs": jobs}, f)
        argv = ["ip", "netns", "exec", topo.ini, *REALTIME, bins.load, "--job-file", jobs_path, "--json",
                "--progress", "on"]
        if tenant == "gold":
            # The wire clock (capsule's TX stamp to the completion's arrival at the packet tap) is the
            # span nvqos and the network decide; the app clock adds the initiator's wake-up latency,
            # which on some VMs varies more than the isolation being measured.
            argv += ["--trace", os.path.join(workdir, "trace-gold.csv"), "--latency-clock", "wire"]
        procs[tenant] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors = {t: [] for t in procs}

    def pump(tenant):
        for line in procs[tenant].stderr:
            errors[tenant].append(line)
            if line.startswith("["):
                progress(f"  {CASES[case]:21s} {line.rstrip()}")

    pumps = [threading.Thread(target=pump, args=(t,), daemon=True) for t in procs]
    for t in pumps:
        t.start()
    try:
        outs = {t: p.stdout.read() for t, p in procs.items()}
        for p in procs.values():
            p.wait()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for t in pumps:
        t.join()
    for t, p in procs.items():
        if p.returncode != 0:
            raise RuntimeError(f"nvqos-load for {t} ({CASES[case]}) exited with {p.returncode}:\n"
                               f"{''.join(errors[t])}{outs[t][-2000:]}")
    after = topo.router_stats()
    report = {j["name"]: j for out in outs.values() for j in json.loads(out)["jobs"]}
    result = {"case": case, "router": {d: {k: after[d][k] - before[d][k] for k in after[d]} for d in after}}
    if "gold" in report:
        read = report["gold"]["ops"]["read"]
        result["gold"] = {"iops": read["iops"], "mib_per_s": read["mib_per_s"], "latency_us": read["latency_us"]}
        with open(os.path.join(workdir, "trace-gold.csv")) as f:
            # latency_ns 0: a kernel stamp was missing (counted by nvqos-load, never guessed).
            result["gold_samples_us"] = [round(int(r["latency_ns"]) / 1000.0, 1)
                                         for r in csv.DictReader(f) if int(r["latency_ns"])]
    if "bronze-read" in report:
        rd = report["bronze-read"]["ops"]["read"]["mib_per_s"]
        wr = report["bronze-write"]["ops"]["write"]["mib_per_s"]
        result["bronze"] = {"read_mib_per_s": rd, "write_mib_per_s": wr, "mib_per_s": rd + wr}
    return result


def summarize(results):
    """Ratios the acceptance criteria are written in, from one run's cases."""
    c = {r["case"]: r for r in results["cases"]}
    p99 = {k: r["gold"]["latency_us"]["p99"] for k, r in c.items() if "gold" in r}
    s = {}
    for case, base in BASELINE.items():
        if case in p99 and base in p99:
            s[f"gold_p99_inflation_{case}"] = p99[case] / p99[base]
    if "nvqos" in p99 and "solo" in p99:
        s["gold_p99_nvqos_vs_alone_without_agents"] = p99["nvqos"] / p99["solo"]
    if "solo_nvqos" in p99 and "solo" in p99:
        s["gold_p99_agent_cost_alone"] = p99["solo_nvqos"] / p99["solo"]
    if "capacity" in c:
        for case in ("shared", "nvqos"):
            if case in c:
                unused = c["capacity"]["bronze"]["mib_per_s"] - c[case]["gold"]["mib_per_s"]
                s[f"bronze_share_of_unused_{case}"] = c[case]["bronze"]["mib_per_s"] / unused
    return s


def start_shaper(topo, bins, params, workdir, stack, progress):
    """Starts what enforces QoS in the nvqos cases (stopped by `stack`); returns the mechanisms in use."""
    if params.shaper == "tc":
        htb = HandMadeHtb(topo, params)
        stack.callback(htb.stop)
        return [], htb.mechanisms()
    progress(f"  nvqos-agent on the target ({topo.tgt_if}, shapes reads) and on the initiator ({topo.ini_if}, "
             f"shapes writes): link {params.capacity_mbit} Mbit/s; gold priority 0, guaranteed "
             f"{params.gold_guarantee_mbit} Mbit/s; bronze priority 7")
    agents = []
    for ns, dev, name in ((topo.tgt, topo.tgt_if, "target"), (topo.ini, topo.ini_if, "initiator")):
        agent = Agent(ns, dev, bins, params, workdir, name)
        stack.callback(agent.stop)
        agents.append(agent)
    return agents, {a.name: a.mechanisms() for a in agents}


def run_scenario(bins, params, cases=tuple(CASES), progress=print, on_agents=None):
    """Runs the cases in order in one topology and returns the results (figures, gold's latency samples,
    the router's counters, the mechanism nvqos used). The nvqos cases come last: the agents start before
    the first of them and stay. on_agents(agents) is called at the end while the agents still run (the
    demo reads their telemetry there)."""
    for case in cases:
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}: one of {', '.join(CASES)}")
    first_nvqos = next((i for i, c in enumerate(cases) if c in NVQOS_CASES), len(cases))
    if any(c not in NVQOS_CASES for c in cases[first_nvqos:]):
        raise ValueError("the nvqos cases (" + ", ".join(NVQOS_CASES) + ") must come after the others")
    results = {"params": params.as_dict(), "kernel": os.uname().release, "cpus": os.cpu_count(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cases": []}
    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="nvqos-isolation-")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        topo = stack.enter_context(Topology(params))
        progress(f"hosts: {topo.tgt} (target: {TGT_GOLD} for gold, {TGT_BRONZE} for bronze) -- {topo.rtr} "
                 f"(router: {params.bottleneck_mbit} Mbit/s each way, {params.router_buffer_bytes // 1024} KiB "
                 f"buffer) -- {topo.ini} (initiator: gold from {INI_GOLD}, bronze from {INI_BRONZE})")
        # Each tenant's volume is served by its own nvqos-target process (one event loop each), as a
        # storage server serves queues from their own cores: with one loop for both, gold's commands
        # wait behind bronze's 128 KiB copies in the target, which no network policy can change.
        for tenant, addresses in (("gold", [TGT_GOLD]), ("bronze", [TGT_BRONZE])):
            target = Target(topo, bins, workdir, tenant, addresses)
            stack.callback(target.stop)
        agents = []
        for i, case in enumerate(cases):
            if i == first_nvqos:
                agents, results["mechanism"] = start_shaper(topo, bins, params, workdir, stack, progress)
            progress(f"case {i + 1}/{len(cases)}: {CASES[case]}, {params.runtime_s:g} s")
            results["cases"].append(run_load(topo, bins, case, params, workdir, progress))
        if on_agents and agents:
            on_agents(agents)
    results["summary"] = summarize(results)
    return results


def unwind_on_termination():
    """SIGTERM and SIGHUP (a job killed by CI, a closed terminal) unwind like Ctrl-C, so the
    namespaces, qdiscs and processes are removed either way; without this they outlive the run."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: sys.exit(128 + number))


def parse_metrics(text):
    """Prometheus text format -> [(name, {label: value}, value)]."""
    samples = []
    for m in re.finditer(r'^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$', text, re.M):
        samples.append((m.group(1), dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")),
                        float(m.group(3))))
    return samples


def format_telemetry(host, text):
    """What one agent attributed to each tenant: class, bytes each way, packets its HTB held back
    (nvqos_tenant_throttled_total), and the NVMe commands it timed in the kernel."""
    samples = parse_metrics(text)
    tenants = {}

    def t(labels):
        return tenants.setdefault(labels.get("tenant", "?"), {"class": "", "ops": {}})

    for name, lb, v in samples:
        if name == "nvqos_tenant_info":
            t(lb)["class"] = lb.get("class", "")
        elif name == "nvqos_tenant_payload_bytes_total":
            t(lb)[lb.get("direction")] = v
        elif name == "nvqos_tenant_throttled_total":
            t(lb)["throttled"] = t(lb).get("throttled", 0) + v
        elif name == "nvqos_nvme_commands_total" and v > 0:
            t(lb)["ops"].setdefault(lb["op"], {})["n"] = v
        elif name == "nvqos_nvme_command_latency_quantile_seconds":
            t(lb)["ops"].setdefault(lb["op"], {})[lb["quantile"]] = v * 1e6
    rows = [f"  {host}: {'tenant':8} {'class':7} {'out MiB':>9} {'in MiB':>9} {'throttled':>10} "
            f"{'op':6} {'commands':>9} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}"]
    pad = " " * (len(host) + 4)
    for name in sorted(tenants):
        d = tenants[name]
        if not d.get("egress") and not d.get("ingress"):
            continue
        ops = [(op, q) for op, q in sorted(d["ops"].items()) if "n" in q and op in ("read", "write")] or [("-", {})]
        for i, (op, q) in enumerate(ops):
            held = f"{d['throttled']:10.0f}" if "throttled" in d else f"{'-':>10}"
            head = (f"{name:8} {d['class'] or '-':7} {d.get('egress', 0) / 2**20:9.1f} "
                    f"{d.get('ingress', 0) / 2**20:9.1f} {held} " if i == 0 else " " * 49)
            tail = (f"{op:6} {q['n']:9.0f} {q.get('0.5', 0):8.0f} {q.get('0.99', 0):8.0f} {q.get('0.999', 0):9.0f}"
                    if q else "")
            rows.append(f"{pad}{head}{tail}")
    return "\n".join(rows)


def format_mechanism(mech):
    """{"target": {"egress": "htb"}, ...} (agents) or {"egress": "..."} (hand-made) -> one line."""
    if not mech:
        return "none"
    if all(isinstance(v, str) for v in mech.values()):
        return ", ".join(f"{d} {m}" for d, m in mech.items())
    return "; ".join(f"{host} " + (", ".join(f"{d} {m}" for d, m in sorted(v.items())) or "(not reported)")
                     for host, v in mech.items())


def format_table(results):
    rows = [f"{'case':22} {'gold p50':>9} {'gold p99':>9} {'gold p99.9':>10} {'gold IOPS':>9}  "
            f"{'bronze MiB/s (read + write)':28} {'queued at router':>16}"]
    for r in results["cases"]:
        g, b = r.get("gold"), r.get("bronze")
        gold = (f"{g['latency_us']['p50']:6.0f} us {g['latency_us']['p99']:6.0f} us {g['latency_us']['p99.9']:7.0f} us "
                f"{g['iops']:9.0f}" if g else f"{'-':>9} {'-':>9} {'-':>10} {'-':>9}")
        bronze = (f"{b['mib_per_s']:6.1f} ({b['read_mib_per_s']:5.1f} + {b['write_mib_per_s']:5.1f})"
                  if b else "-")
        queued = sum(d["overlimits"] for d in r["router"].values())
        rows.append(f"{CASES[r['case']]:22} {gold}  {bronze:28} {queued:11d} pkts")
    rows.append("")
    s = results["summary"]
    for case, base in BASELINE.items():
        if f"gold_p99_inflation_{case}" in s:
            line = f"{CASES[case]}: gold p99 = {s[f'gold_p99_inflation_{case}']:.2f} x {CASES[base]}"
            if f"bronze_share_of_unused_{case}" in s:
                line += (f"; bronze gets {s[f'bronze_share_of_unused_{case}'] * 100:.0f}% of the capacity gold "
                         f"leaves unused")
            rows.append(line)
    if "gold_p99_agent_cost_alone" in s:
        rows.append(f"the agents' own cost to gold alone: p99 {s['gold_p99_agent_cost_alone']:.2f} x without them; "
                    f"{CASES['nvqos']} against {CASES['solo']} without agents: "
                    f"{s['gold_p99_nvqos_vs_alone_without_agents']:.2f} x")
    rows.append(f"mechanism in the nvqos cases: {format_mechanism(results.get('mechanism'))}")
    return "\n".join(rows)


def compact_json(doc):
    """A policy as an operator would write it: one line per list item."""
    lines = []
    for i, (k, v) in enumerate(doc.items()):
        comma = "," if i < len(doc) - 1 else ""
        if isinstance(v, list) and len(v) > 1:
            items = ",\n".join(f"    {json.dumps(x)}" for x in v)
            lines.append(f'  "{k}": [\n{items}\n  ]{comma}')
        else:
            lines.append(f'  "{k}": {json.dumps(v)}{comma}')
    return "{\n" + "\n".join(lines) + "\n}"


def parse_duration(text):
    """"5s", "500ms", "1m" or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (5s, 500ms, 1m)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("NVQOS_BUILD_DIR", "build"))
    ap.add_argument("--runtime", type=parse_duration, default=5.0, help="length of each case (5s, 500ms, 1m)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, of " + ", ".join(CASES))
    ap.add_argument("--shaper", choices=("nvqos", "tc"), default="nvqos",
                    help="what shapes in the nvqos cases: the agents, or a hand-made tc HTB (reference)")
    ap.add_argument("--capacity-mbit", type=int, default=Params().capacity_mbit,
                    help="link capacity given to nvqos, Mbit/s (the bottleneck is 1000)")
    ap.add_argument("--gold-guarantee-mbit", type=int, default=Params().gold_guarantee_mbit)
    ap.add_argument("--router-buffer", type=int, default=Params().router_buffer_bytes,
                    help="the bottleneck's queue, bytes")
    ap.add_argument("--demo", action="store_true", help="explain each step and show the agents' telemetry")
    ap.add_argument("--json", help="write the results (with gold's latency samples) here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("nvqos isolation scenario: needs root (network namespaces, qdiscs, BPF)")
    unwind_on_termination()
    params = Params(runtime_s=args.runtime, shaper=args.shaper, capacity_mbit=args.capacity_mbit,
                    gold_guarantee_mbit=args.gold_guarantee_mbit, router_buffer_bytes=args.router_buffer)

    def say(text):
        print(text, flush=True)

    def step(text):
        say(f"\n== {text}")

    telemetry = []

    def show_telemetry(agents):
        time.sleep(1.2)  # one more telemetry interval
        for a in agents:
            telemetry.append(format_telemetry(a.name, a.metrics()))

    if args.demo:
        step("the noisy neighbour: gold (QD1 4 KiB random reads) and bronze (QD32 128 KiB reads + QD32 128 KiB "
             "writes) share a 1 Gbit/s bottleneck")
        say("nvqos policy (each agent's file names its own interface under \"links\"):")
        say(compact_json(agent_policy(params, "<interface>")))
        step("running")
    results = run_scenario(Binaries(args.build_dir), params, cases=args.cases.split(","), progress=say,
                           on_agents=show_telemetry if args.demo else None)
    if telemetry:
        step("what nvqos-agent saw in the nvqos cases (from /metrics; out = sent by that host, "
             "throttled = packets its HTB held back)")
        say("\n".join(telemetry))
        say("  Commands are timed in the kernel: on the target from capsule in to completion out, on the "
            "initiator from capsule out to completion in.")
    step(f"results: gold's latency as nvqos-load measured it, bronze's throughput "
         f"({params.runtime_s:g} s per case, kernel {results['kernel']}, {results['cpus']} CPUs)")
    say(format_table(results))
    if args.demo:
        say("\nWithout nvqos the router's FIFO is where the queue forms, and gold's 4 KiB reads wait behind "
            "bronze's\n128 KiB transfers. With nvqos the agents shape each host's egress a little under the "
            "bottleneck, so the\nqueue forms in their HTB, where gold goes first and bronze takes what gold "
            "leaves.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except (RuntimeError, ValueError) as e:
        sys.exit(f"nvqos isolation scenario: {e}")
