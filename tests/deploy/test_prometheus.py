#!/usr/bin/env python3
"""The dashboards and alerts against a real Prometheus scraping real agents.

Two hosts (network namespaces joined by a veth pair): nvqos-target on one, nvqos-load's tenants on the
other, nvqos-agent on both, each started as the DaemonSet starts it (deploy/container/nvqos-entrypoint.sh,
the container's arguments, only the capabilities the DaemonSet grants, no_new_privs), the initiator's
interface found from its node address, the target's from the interfaces ConfigMap layout. Prometheus
(Debian's) runs on the initiator host's loopback with the annotation scrape job's relabelling and the
shipped alert rules (`for` shortened), scraping both agents and one dead target. Then:

- every expression of every dashboard panel and template variable, and every alert rule (the whole
  expression and its signal, the part before the threshold), is evaluated through the HTTP API and
  must return data;
- NvqosConfigReloadFailed (a bad policy written to one agent), NvqosAgentDown (the dead target) and
  NvqosTenantLatencyAboveSLO (a crafted breach: gold's class declares a p99 read objective of 1 us, which
  the agents export as nvqos_slo_objective_seconds and their SLO controllers try to hold) must fire.

An expression that selects a metric the agents do not export yet is reported as PENDING with the
missing names, not failed, and not counted as passing; every other expression without data fails, and
so does any expression over the tenant-class or SLO metrics (SLO_METRICS) that is not answered from
the agents' own samples.
Exit 77 (skipped) when not root or Prometheus is not installed.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

import deploy_lib as d

SUBNET = "10.213.0"
TARGET_ADDRS = {"gold": f"{SUBNET}.1", "bronze": f"{SUBNET}.11", "blocked": f"{SUBNET}.21"}
HOST_ADDRS = {"gold": f"{SUBNET}.2", "bronze": f"{SUBNET}.3", "blocked": f"{SUBNET}.4"}
SUBNQN = "nqn.2026-11.io.nvqos:deploy-test"
PROM = "127.0.0.1:9090"
# The crafted breach: gold's p99 read objective, far below any real p99.
BREACH_OBJECTIVE_US = 1
# What the SLO alert and the dashboards' SLO panels join; the agents must export samples of each.
SLO_METRICS = {"nvqos_tenant_info", "nvqos_slo_objective_seconds", "nvqos_slo_compliance_ratio", "nvqos_slo_windows_total",
               "nvqos_slo_controller_info", "nvqos_class_effective_ceiling_bits_per_second",
               "nvqos_class_effective_ceiling_iops"}
RATE_INTERVAL = "15s"
LOAD_SECONDS = 50


def log(msg):
    print(f"[deploy-prom] {msg}", flush=True)


def run(cmd, check=True, capture=False, **kw):
    r = subprocess.run(cmd, check=False, text=True, capture_output=capture, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout or ''}{r.stderr or ''}")
    return r


class Lab:
    """Namespaces, processes and files of one run; close() removes them whatever happened."""

    def __init__(self, build):
        self.build = build
        self.tag = str(os.getpid() % 100000)
        self.ns_t, self.ns_i = f"dpl{self.tag}t", f"dpl{self.tag}i"
        self.if_t, self.if_i = f"dpl{self.tag}t", f"dpl{self.tag}i"
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="nvqos-deploy-"))
        # One bpffs instance for the test's "host", bound into every agent's /sys/fs/bpf as the
        # DaemonSet's hostPath mount is: pins outlive an agent, so a restarted one can adopt them.
        self.bpffs = self.dir / "bpffs"
        self.procs = []

    def close(self, keep_logs_on_failure):
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p, name in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing it")
                p.kill()
                p.wait()
        for ns in (self.ns_t, self.ns_i):
            run(["ip", "netns", "del", ns], check=False, capture=True)
        run(["umount", "-l", str(self.bpffs)], check=False, capture=True)
        if keep_logs_on_failure:
            for f in sorted(self.dir.glob("*.log")):
                text = f.read_text(errors="replace")
                print(f"----- {f.name} (last 40 lines)\n" + "\n".join(text.splitlines()[-40:]))
        shutil.rmtree(self.dir, ignore_errors=True)

    def spawn(self, name, cmd):
        out = open(self.dir / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((p, name))
        return p

    def ns_exec(self, ns):
        return ["ip", "netns", "exec", ns]

    def curl(self, ns, url, data=None):
        """(status, body) of an HTTP request made inside namespace `ns`."""
        cmd = self.ns_exec(ns) + ["curl", "-s", "-G", "-m", "10", "-w", "\n%{http_code}", url]
        for k, v in (data or {}).items():
            cmd += ["--data-urlencode", f"{k}={v}"]
        r = run(cmd, check=False, capture=True)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def network(self):
        self.bpffs.mkdir()
        run(["mount", "-t", "bpf", "bpf", str(self.bpffs)])
        for ns in (self.ns_t, self.ns_i):
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "add", self.if_t, "netns", self.ns_t, "type", "veth", "peer", "name", self.if_i,
             "netns", self.ns_i])
        for a in TARGET_ADDRS.values():
            run(["ip", "-n", self.ns_t, "addr", "add", f"{a}/24", "dev", self.if_t])
        for a in HOST_ADDRS.values():
            run(["ip", "-n", self.ns_i, "addr", "add", f"{a}/24", "dev", self.if_i])
        for ns, ifname in ((self.ns_t, self.if_t), (self.ns_i, self.if_i)):
            run(["ip", "-n", ns, "link", "set", ifname, "up"])
            # One receive CPU per flow, as a NIC's RSS gives (see tests/integration): the PDU walk
            # sees each stream in order.
            run(self.ns_exec(ns) + ["sh", "-c", f"echo 1 > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"])
        for tenant, dst in TARGET_ADDRS.items():
            run(["ip", "-n", self.ns_i, "route", "add", f"{dst}/32", "dev", self.if_i, "src", HOST_ADDRS[tenant]])


def policies():
    """Initiator- and target-side policies: gold/silver/bronze classes, gold with the crafted SLO breach
    (its SLO controller cuts bronze towards its floor while gold misses the objective, as it would for
    a real breach)."""
    def policy(tenants):
        for t in tenants:
            t["class"] = "gold" if t["name"] == "gold" else "bronze"
        return {"version": 1, "tenants": tenants,
                "links": [],  # filled per agent
                "classes": [
                    {"name": "gold", "priority": 0, "guaranteed_mbit_s": 200, "ceiling_mbit_s": 8000,
                     "objectives": [{"op": "read", "quantile": 0.99, "max_latency_us": BREACH_OBJECTIVE_US}]},
                    {"name": "silver", "priority": 2},
                    {"name": "bronze", "priority": 4, "ceiling_mbit_s": 400, "ceiling_iops": 2000},
                ],
                "default_class": "silver",
                "slo_controller": {"interval_ms": 250}}

    ini = policy([{"name": t, "match": [{"remote": f"{TARGET_ADDRS[t]}/32"}]} for t in ("gold", "bronze")])
    tgt = policy([{"name": t, "match": [{"remote": f"{HOST_ADDRS[t]}/32"}]} for t in ("gold", "bronze")] +
                 [{"name": "blocked", "match": [{"remote": f"{HOST_ADDRS['blocked']}/32"}], "quarantine": True}])
    return ini, tgt


def daemonset_container():
    ds = d.manifests()[("DaemonSet", "nvqos-agent")]
    return ds["spec"]["template"]["spec"]["containers"][0]


def agent_command(lab, ns, node, workdir, env):
    """The DaemonSet's container command, arguments and capabilities, with its paths moved to `workdir`."""
    c = daemonset_container()
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"], caps
    keep = ",".join("+" + cap.lower() for cap in caps["add"])
    moves = {"/etc/nvqos/policy/": f"{workdir}/policy/", "/run/nvqos/": f"{workdir}/run/"}
    args = []
    for a in c["args"]:
        for old, new in moves.items():
            a = a.replace(old, new)
        args.append(a)
    entrypoint = str(d.ROOT / "deploy" / "container" / "nvqos-entrypoint.sh")
    envs = [f"{k}={v}" for k, v in {"NODE_NAME": node, "NVQOS_AGENT_BIN": lab.build["agent"],
                                      "NVQOS_INTERFACES_DIR": f"{workdir}/interfaces", **env}.items()]
    # `ip netns exec` gives the agent its namespace's sysfs, as a hostNetwork pod has, in a mount
    # namespace of its own; the test's bpffs is bound there while still privileged, standing in for
    # the DaemonSet's hostPath mount (without it the agent would need CAP_SYS_ADMIN to mount one).
    launch = (f"mount --bind {lab.bpffs} /sys/fs/bpf && exec setpriv --bounding-set=-all," + keep +
              ' --inh-caps=-all --no-new-privs -- env "$@"')
    return lab.ns_exec(ns) + ["sh", "-c", launch, "launch"] + envs + [entrypoint] + args


def start_agent(lab, ns, node, policy, interfaces_file=None, env=None, name=None):
    """Starts (or, with `policy` None, restarts) the agent of `node`; returns (process, policy path)."""
    workdir = lab.dir / node
    if policy is not None:
        for sub in ("policy", "run", "interfaces"):
            (workdir / sub).mkdir(parents=True)
        (workdir / "policy" / "policy.json").write_text(json.dumps(policy, indent=2))
        if interfaces_file:
            (workdir / "interfaces" / node).write_text(interfaces_file + "\n")
    cmd = agent_command(lab, ns, node, workdir, env or {})
    log(f"agent {node}: {' '.join(cmd[5:])}")
    proc = lab.spawn(name or f"agent-{node}", cmd)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent {node} exited with {proc.returncode}")
        if lab.curl(ns, "http://127.0.0.1:9465/readyz")[0] == 200:
            status, body = lab.curl(ns, "http://127.0.0.1:9465/healthz")
            if status != 200:
                raise RuntimeError(f"agent {node}: /healthz answered {status} {body}")
            return proc, workdir / "policy" / "policy.json"
        time.sleep(0.2)
    raise RuntimeError(f"agent {node} not ready within 30 s")


def test_rules(workdir):
    """The shipped rules with `for` shortened; nothing else: every series they join comes from the agents."""
    doc = yaml.safe_load(d.RULES.read_text())
    for g in doc["groups"]:
        g["interval"] = "1s"
        for r in g["rules"]:
            if "for" in r:
                r["for"] = "0s"
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def prometheus_config(lab, rules_path):
    """A static stand-in for Kubernetes discovery: each target carries the __meta labels the pod
    discovery would, and the annotation job's relabel_configs run verbatim."""
    job = yaml.safe_load((d.ROOT / "deploy" / "prometheus" / "scrape-annotations.yaml").read_text())
    scrape = job["scrape_configs"][0]
    assert scrape["job_name"] == "nvqos-agent"

    def pod(address, node, port="9465", scrape_it="true"):
        return {"targets": [address], "labels": {
            "__meta_kubernetes_pod_node_name": node,
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape_it,
            "__meta_kubernetes_pod_annotation_prometheus_io_port": port,
            "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics"}}

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules_path)],
        "scrape_configs": [{
            "job_name": "nvqos-agent",
            "static_configs": [
                pod("127.0.0.1", "initiator-0"),                 # port from the annotation
                pod(f"{TARGET_ADDRS['gold']}:80", "target-0"),   # the annotation overrides the port
                pod("127.0.0.1", "dead-0", port="9479"),          # nothing listens: NvqosAgentDown
                pod("127.0.0.1", "not-annotated-0", scrape_it="false"),
            ],
            "relabel_configs": scrape["relabel_configs"],
        }],
    }
    path = lab.dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prom:
    def __init__(self, lab):
        self.lab = lab

    def get(self, path, **params):
        status, body = self.lab.curl(self.lab.ns_i, f"http://{PROM}{path}", params or None)
        try:
            doc = json.loads(body)
        except json.JSONDecodeError:
            return {"status": "error", "error": f"HTTP {status}: {body[:200]}"}
        return doc

    def instant(self, expr):
        return self.get("/api/v1/query", query=expr)

    def range(self, expr, seconds=30):
        now = time.time()
        return self.get("/api/v1/query_range", query=expr, start=f"{now - seconds:.3f}", end=f"{now:.3f}", step="1")


def classify(doc, names, exported):
    """OK / PENDING / FAIL and a detail for one evaluated expression. `exported` is what the agents
    export: (families, histogram families, families with samples)."""
    families, histograms, with_samples = exported
    names = {d.family_of(x, histograms) for x in names}
    if doc.get("status") != "success":
        return "FAIL", f"error: {doc.get('errorType', '')} {doc.get('error', '')}"
    data = doc["data"]["result"]
    n = len(data) if isinstance(data, list) else 1
    absent = sorted(x for x in names if x != "up" and x not in families)
    empty = sorted(x for x in names if x != "up" and x in families and x not in with_samples)
    if absent or empty:
        why = ([f"not exported by the agent yet: {', '.join(absent)}"] if absent else []) + \
              ([f"exported without samples in this scenario: {', '.join(empty)}"] if empty else [])
        return "PENDING", f"{n} series; " + "; ".join(why)
    if n == 0:
        return "FAIL", "no data although the agents export samples of every metric it selects"
    return "OK", f"{n} series"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, BPF)")
        return 77
    for tool in ("prometheus", "promtool", "curl", "setpriv"):
        if not shutil.which(tool):
            print(f"skipped: {tool} is not installed (scripts/install-deps.sh installs it)")
            return 77
    b = pathlib.Path(args.build_dir).resolve()
    build = {"agent": str(b / "agent" / "nvqos-agent"), "target": str(b / "tools" / "target" / "nvqos-target"),
             "load": str(b / "tools" / "load" / "nvqos-load")}
    # A job killed by CI (SIGTERM) or a closed terminal (SIGHUP) unwinds through the finally below, so
    # the namespaces and the bpffs mount do not outlive the run (a killed run left dpl<pid>t/i behind).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: sys.exit(128 + number))
    lab = Lab(build)
    failed = True
    try:
        failed = not scenario(lab)
        return 1 if failed else 0
    finally:
        lab.close(keep_logs_on_failure=failed)


def scenario(lab):
    lab.network()
    lab.spawn("target", lab.ns_exec(lab.ns_t) + [
        lab.build["target"], "--subsystem", SUBNQN, "--namespace", "1G:4096", "--allow-any-host",
        "--service-time", "fixed:50us"] + sum((["--listen", f"{a}:4420"] for a in TARGET_ADDRS.values()), []))
    ini_policy, tgt_policy = policies()
    ini_policy["links"] = [{"interface": lab.if_i, "capacity_mbit_s": 10000}]
    tgt_policy["links"] = [{"interface": lab.if_t, "capacity_mbit_s": 10000}]
    # Initiator: interface from the node address (downward API status.hostIP); target: from the
    # interfaces ConfigMap's key for its node.
    start_agent(lab, lab.ns_i, "initiator-0", ini_policy, env={"NVQOS_HOST_IP": HOST_ADDRS["gold"]})
    tgt_agent, tgt_policy_path = start_agent(lab, lab.ns_t, "target-0", tgt_policy, interfaces_file=lab.if_t)

    rules_path = test_rules(lab.dir)
    prom_config = prometheus_config(lab, rules_path)
    for cmd in (["promtool", "check", "config", str(prom_config)], ["promtool", "check", "rules", str(rules_path)]):
        r = run(cmd, check=False, capture=True)
        log(f"{' '.join(cmd[:3])}: {'ok' if r.returncode == 0 else 'FAILED'}")
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            return False
    lab.spawn("prometheus", lab.ns_exec(lab.ns_i) + [
        "prometheus", f"--config.file={prom_config}", f"--storage.tsdb.path={lab.dir / 'tsdb'}",
        f"--web.listen-address={PROM}", "--log.level=warn"])
    prom = Prom(lab)
    deadline = time.time() + 30
    while lab.curl(lab.ns_i, f"http://{PROM}/-/ready")[0] != 200:
        if time.time() > deadline:
            log("Prometheus not ready within 30 s")
            return False
        time.sleep(0.3)
    log("Prometheus ready; starting the load")

    jobs = {"jobs": [
        {"name": "gold", "target": f"{TARGET_ADDRS['gold']}:4420", "subnqn": SUBNQN, "rw": "randread",
         "bs": "4k", "qd": 1, "runtime": f"{LOAD_SECONDS}s"},
        {"name": "bronze", "target": f"{TARGET_ADDRS['bronze']}:4420", "subnqn": SUBNQN, "rw": "randrw",
         "bs": "128k", "qd": 8, "runtime": f"{LOAD_SECONDS}s", "offset": "512m", "size": "512m"}]}
    (lab.dir / "jobs.json").write_text(json.dumps(jobs))
    load = lab.spawn("load", lab.ns_exec(lab.ns_i) + [lab.build["load"], "--job-file", str(lab.dir / "jobs.json")])
    # The quarantined tenant only ever sends SYNs: dropped in XDP on the target.
    blocked = {"jobs": [{"name": "blocked", "target": f"{TARGET_ADDRS['blocked']}:4420", "subnqn": SUBNQN,
                         "rw": "randread", "bs": "4k", "qd": 1, "runtime": f"{LOAD_SECONDS}s"}]}
    (lab.dir / "blocked.json").write_text(json.dumps(blocked))
    lab.spawn("load-blocked", lab.ns_exec(lab.ns_i) + [lab.build["load"], "--job-file", str(lab.dir / "blocked.json")])

    # A policy the agent must refuse (unknown field): the target agent keeps its policy and reports it.
    bad = dict(tgt_policy, tenant_typo=[])
    tgt_policy_path.write_text(json.dumps(bad))

    # Wait until both agents' rates have data over the dashboards' rate interval.
    deadline = time.time() + 30
    probe = f'count(sum by (node) (rate(nvqos_nvme_commands_total{{tenant="gold"}}[{RATE_INTERVAL}])) > 0)'
    while True:
        r = prom.instant(probe)
        if r.get("status") == "success" and r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 2:
            break
        if time.time() > deadline or load.poll() is not None:
            log(f"no command rates from both agents within 30 s: {r}")
            return False
        time.sleep(1)
    time.sleep(3)
    log("both agents report command rates; evaluating")
    texts = [lab.curl(lab.ns_i, "http://127.0.0.1:9465/metrics")[1],
             lab.curl(lab.ns_t, "http://127.0.0.1:9465/metrics")[1]]
    exported = d.exported_families("\n".join(texts))

    ok = True
    ok &= check_targets(prom)
    results = []
    overview_values = {"cluster": ".*", "node": ".*", "interface": ".*", "class": ".*", "tenant": ".*",
                       "role": ".*", "job": "nvqos-agent", "__rate_interval": RATE_INTERVAL}
    for name, board in d.load_dashboards().items():
        values = dict(overview_values)
        if "detail" in name:
            values["tenant"] = "gold"
        for var, expr, label in d.query_variables(board):
            q = d.substitute(expr, values)
            if label:
                doc = prom.get(f"/api/v1/label/{label}/values", **{"match[]": q})
                if doc.get("status") == "success":
                    doc = {"status": "success", "data": {"result": doc["data"]}}
            else:
                doc = prom.instant(q)
            results.append((f"{name} variable ${var}", *classify(doc, d.metric_names(q), exported)))
        for title, t in d.dashboard_targets(board):
            q = d.substitute(t["expr"], values)
            doc = prom.instant(q) if t.get("instant") else prom.range(q)
            results.append((f"{name} \"{title}\" {t['refId']}", *classify(doc, d.metric_names(q), exported)))
    for alert, expr in d.alert_rules():
        doc = prom.instant(expr)
        status, detail = classify(doc, d.metric_names(expr), exported)
        if status == "FAIL" and "no data" in detail:
            status, detail = "OK", "evaluates (not firing now)"
        results.append((f"alert {alert} (whole expression)", status, detail))
        before_threshold = d.signal_of(expr)
        results.append((f"alert {alert} signal", *classify(prom.instant(before_threshold),
                                                             d.metric_names(before_threshold), exported)))

    width = max(len(r[0]) for r in results)
    for what, status, detail in results:
        print(f"  {status:7} {what:{width}}  {detail}")
    counts = {s: sum(1 for r in results if r[1] == s) for s in ("OK", "PENDING", "FAIL")}
    log(f"expressions: {counts['OK']} ok, {counts['PENDING']} pending (metrics not on this agent yet), "
        f"{counts['FAIL']} failed")
    for kind in ("not exported by the agent yet", "exported without samples in this scenario"):
        names = sorted({m for r in results if r[1] == "PENDING" for part in r[2].split("; ")
                        if part.startswith(kind) for m in part.split(": ", 1)[1].split(", ")})
        if names:
            log(f"metrics the dashboards/alerts use, {kind}: " + ", ".join(names))
    ok &= counts["FAIL"] == 0
    ok &= check_slo_from_agents(results, exported)
    ok &= check_alerts(prom)
    ok &= rolling_update(lab, prom, tgt_agent, load, tgt_policy_path, tgt_policy)
    status = load.wait(timeout=LOAD_SECONDS + 30)
    log(f"nvqos-load exit status {status} (0: every command completed without error)")
    ok &= uninstall(lab)
    return ok and status == 0


def uninstall(lab):
    """deploy/kubernetes/cleanup.yaml after the agents stopped: its init container's command, with its
    capabilities, on each host must leave no nvqos tc filter, XDP program or pin behind."""
    objs = d.manifests()
    if ("DaemonSet", "nvqos-cleanup") not in objs:
        log("uninstall: no cleanup manifest; not checked")
        return True
    for p, name in lab.procs:
        if name.startswith("agent-") and p.poll() is None:
            p.send_signal(15)
            p.wait(timeout=30)
    pinned = list((lab.bpffs / "nvqos").rglob("*"))
    log(f"uninstall: {len(pinned)} pinned objects under nvqos's pin directory before the cleanup")
    init = objs[("DaemonSet", "nvqos-cleanup")]["spec"]["template"]["spec"]["initContainers"][0]
    caps = ",".join("+" + c.lower() for c in init["securityContext"]["capabilities"]["add"])
    cmd = [lab.build["agent"]] + init["command"][1:]
    ok = True
    for ns, ifname in ((lab.ns_t, lab.if_t), (lab.ns_i, lab.if_i)):
        before = run(lab.ns_exec(ns) + ["tc", "filter", "show", "dev", ifname, "ingress"], capture=True).stdout
        r = run(lab.ns_exec(ns) + ["sh", "-c", f"mount --bind {lab.bpffs} /sys/fs/bpf && exec setpriv "
                                   f"--bounding-set=-all,{caps} --inh-caps=-all --no-new-privs -- \"$@\"",
                                   "cleanup"] + cmd, check=False, capture=True)
        filters = run(lab.ns_exec(ns) + ["tc", "filter", "show", "dev", ifname, "ingress"], capture=True).stdout + \
            run(lab.ns_exec(ns) + ["tc", "filter", "show", "dev", ifname, "egress"], capture=True).stdout
        link = run(lab.ns_exec(ns) + ["ip", "link", "show", "dev", ifname], capture=True).stdout
        left = [what for what, there in (("tc filters", "nvqos" in filters), ("XDP", "xdp" in link)) if there]
        log(f"uninstall on {ns}: --cleanup exit {r.returncode}; before: {'nvqos filters' if 'nvqos' in before else 'none'}"
            f"; left behind: {', '.join(left) or 'nothing'}; {r.stdout.strip().splitlines()[-1:] or ''}")
        ok &= r.returncode == 0 and not left
    # Only nvqos's pin directory: bpffs has its own debug iterators, and libxdp keeps a directory.
    pins = list((lab.bpffs / "nvqos").rglob("*"))
    if pins:
        log(f"uninstall: pins left in bpffs: {[str(p.relative_to(lab.bpffs)) for p in pins][:5]}")
        ok = False
    return ok


def rolling_update(lab, prom, agent, load, policy_path, policy):
    """What a DaemonSet rolling update does to the target's agent, under load and while Prometheus
    holds its keep-alive scrape connection: SIGTERM, which must end the agent well within the pod's
    grace period, then the same command again. With the DaemonSet's keep-on-exit flag the new agent
    adopts the pinned state, so no counter may reset (Prometheus' resets()) and no command may fail
    (nvqos-load's exit status)."""
    if load.poll() is not None:
        log("rolling update: the load ended before the restart; LOAD_SECONDS is too short for this host")
        return False
    keep = [a for a in daemonset_container()["args"] if a.startswith("--keep")]
    grace = d.manifests()[("DaemonSet", "nvqos-agent")]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    policy_path.write_text(json.dumps(policy))  # the good policy back: a new agent refuses a bad one
    time.sleep(1)
    started = time.time()
    agent.send_signal(15)
    try:
        status = agent.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"rolling update: the agent did not exit within the {grace} s grace period after SIGTERM "
            "(the kubelet would SIGKILL it)")
        return False
    log(f"rolling update: target agent exited {status} {time.time() - started:.1f} s after SIGTERM "
        f"({'with ' + keep[0] if keep else 'detaching: the DaemonSet passes no keep-on-exit flag'})")
    ok = status == 0 and time.time() - started < 5
    start_agent(lab, lab.ns_t, "target-0", None, interfaces_file=lab.if_t, name="agent-target-0-new")
    if not keep:
        return ok
    time.sleep(4)  # a few scrapes of the new agent
    for metric in ("nvqos_tenant_bytes_total", "nvqos_tenant_packets_total", "nvqos_nvme_commands_total"):
        r = prom.instant(f'max(resets({metric}{{node="target-0"}}[2m]))')
        value = r["data"]["result"][0]["value"][1] if r.get("status") == "success" and r["data"]["result"] else "?"
        log(f"rolling update: counter resets of {metric} on target-0: {value}")
        ok &= value == "0"
    return ok


def check_targets(prom):
    """The relabelling: two agents up with node/cluster labels, the dead one down, the
    non-annotated pod dropped."""
    doc = prom.get("/api/v1/targets")
    active = doc["data"]["activeTargets"]
    seen = {t["labels"].get("node"): t for t in active}
    ok = True
    for node, health in (("initiator-0", "up"), ("target-0", "up"), ("dead-0", "down")):
        t = seen.get(node)
        if not t or t["health"] != health or t["labels"].get("cluster") != "my-cluster" or \
                t["labels"].get("job") != "nvqos-agent":
            log(f"target {node}: expected {health} with cluster/job labels, got {t and t['labels']} "
                f"{t and t['health']} {t and t.get('lastError')}")
            ok = False
    if "not-annotated-0" in seen:
        log("a pod without prometheus.io/scrape=true was scraped")
        ok = False
    if seen.get("target-0") and not seen["target-0"]["labels"]["instance"].endswith(":9465"):
        log(f"the port annotation did not set the address: {seen['target-0']['labels']}")
        ok = False
    log(f"scrape targets and relabelling: {'ok' if ok else 'FAILED'}")
    return ok


def check_slo_from_agents(results, exported):
    """The SLO alert and panels run on the agents' own series: each of SLO_METRICS has samples, no
    expression over them is pending, and the objective Prometheus holds is the policy's."""
    ok = True
    missing = sorted(SLO_METRICS - exported[2])
    if missing:
        log("the agents export no samples of: " + ", ".join(missing))
        ok = False
    pending = [what for what, status, detail in results if status == "PENDING" and any(m in detail for m in SLO_METRICS)]
    if pending:
        log("expressions over tenant-class/SLO metrics without the agents' data: " + "; ".join(pending))
        ok = False
    return ok


def check_alerts(prom):
    want = {"NvqosConfigReloadFailed": {"node": "target-0"}, "NvqosAgentDown": {"node": "dead-0"},
            "NvqosTenantLatencyAboveSLO": {"tenant": "gold", "class": "gold", "op": "read"},
            # Every class below gold is at its floor within seconds (bronze's floor is its ceiling) and
            # no window meets 1 µs: the controller has nothing left to cut.
            "NvqosSloMissedAtFloors": {"class": "gold", "op": "read"}}
    deadline = time.time() + 30
    while True:
        alerts = prom.get("/api/v1/alerts")["data"]["alerts"]
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing" and
                  all(a["labels"].get(k) == v for k, v in want.get(a["labels"]["alertname"], {}).items())}
        if set(want) <= firing or time.time() > deadline:
            break
        time.sleep(1)
    for name in sorted(want):
        log(f"alert {name} {dict(want[name])}: {'firing' if name in firing else 'NOT firing'}")
    # The breach is judged against the objective the agents export, not one of the test's making.
    objective = prom.instant('nvqos_slo_objective_seconds{class="gold", op="read", quantile="0.99"}')
    values = sorted({float(r["value"][1]) for r in objective.get("data", {}).get("result", [])})
    log(f"gold's p99 read objective as the agents export it: {values} s (policy: {BREACH_OBJECTIVE_US} us)")
    if values != [BREACH_OBJECTIVE_US * 1e-6]:
        return False
    compliance = prom.instant('nvqos_slo_compliance_ratio{class="gold", op="read", quantile="0.99"}')
    ratios = {r["metric"].get("node"): float(r["value"][1]) for r in compliance.get("data", {}).get("result", [])}
    log(f"gold's p99 read compliance as the agents export it (no window can meet 1 us): {ratios}")
    if not ratios or max(ratios.values()) > 0:
        return False
    others = sorted({a["labels"]["alertname"] for a in alerts if a["state"] == "firing"} - set(want))
    if others:
        log("also firing: " + ", ".join(others))
    return set(want) <= firing


if __name__ == "__main__":
    sys.exit(main())
