#!/usr/bin/env python3
"""deploy/ and dashboards/ as files: Kubernetes manifests parsed with a YAML library and checked for
what the DaemonSet must get right, the alert rules through promtool, the shipped policies through the
agent's own --validate, every flag the manifests and the systemd unit pass through the agent's --help,
the Dockerfile's build steps against the README's, its runtime packages against the binaries' shared
libraries, the interface-choosing entrypoint, and the dashboards against their generator.

Quick (a few seconds), no root. Usage: test_manifests.py --build-dir BUILD
"""
import argparse
import functools
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

import deploy_lib as d

ROOT = d.ROOT
BUILD = None
# Metric names agreed in the helpers' contract that may not be on this branch yet (CONTRACTS.md); any
# other name a dashboard or rule uses must be documented in docs/metrics.md.
CONTRACT_METRICS = {
    "nvqos_qos_mechanism_info", "nvqos_tenant_info", "nvqos_class_guaranteed_bits_per_second",
    "nvqos_class_ceiling_bits_per_second", "nvqos_class_ceiling_iops", "nvqos_class_bytes_total",
    "nvqos_tenant_throttled_total", "nvqos_tenant_dropped_total", "nvqos_tenant_dropped_bytes_total",
    "nvqos_tenant_burst_balance_bytes", "nvqos_tenant_burst_balance_ios",
    "nvqos_class_effective_ceiling_bits_per_second", "nvqos_class_effective_ceiling_iops",
    "nvqos_slo_objective_seconds", "nvqos_slo_compliance_ratio", "nvqos_slo_controller_info",
    "nvqos_access_denied_total",
}
CAPABILITY_REASONS = {"BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"}


def agent():
    return str(pathlib.Path(BUILD) / "agent" / "nvqos-agent")


def agent_help():
    return subprocess.run([agent(), "--help"], capture_output=True, text=True, check=True).stdout


def flags_in(args):
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = d.manifests()
        cls.ds = cls.objs[("DaemonSet", "nvqos-agent")]
        cls.pod = cls.ds["spec"]["template"]["spec"]
        cls.c = cls.pod["containers"][0]

    def test_kustomization_lists_every_manifest_but_the_uninstall_step(self):
        k = yaml.safe_load((d.KUBERNETES / "kustomization.yaml").read_text())
        files = {p.name for p in d.KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
        self.assertEqual(set(k["resources"]), files - {"cleanup.yaml"})
        for obj in self.objs.values():
            if obj["kind"] != "Namespace":
                self.assertEqual(obj["metadata"].get("namespace"), "nvqos-system", obj["metadata"]["name"])

    def test_daemonset_host_network_and_least_privilege(self):
        self.assertTrue(self.pod["hostNetwork"])
        self.assertEqual(self.pod["dnsPolicy"], "ClusterFirstWithHostNet")
        sc = self.c["securityContext"]
        self.assertFalse(sc.get("privileged", False))
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        added = set(sc["capabilities"]["add"])
        self.assertLessEqual(added, CAPABILITY_REASONS)
        self.assertLessEqual({"BPF", "NET_ADMIN"}, added)
        self.assertFalse(self.pod.get("automountServiceAccountToken", True))
        # Each capability granted, and each of the issue's candidates left out, is explained.
        ops = (ROOT / "docs" / "operations.md").read_text()
        for cap in CAPABILITY_REASONS:
            self.assertIn(f"CAP_{cap}", ops, f"docs/operations.md does not say why CAP_{cap} is (not) granted")

    def test_daemonset_mounts_bpffs_and_btf(self):
        mounts = {m["name"]: m for m in self.c["volumeMounts"]}
        vols = {v["name"]: v for v in self.pod["volumes"]}

        def host(path):
            name = next(n for n, v in vols.items() if v.get("hostPath", {}).get("path") == path)
            return mounts[name], vols[name]

        m, _ = host("/sys/fs/bpf")
        self.assertEqual(m["mountPath"], "/sys/fs/bpf")
        self.assertFalse(m.get("readOnly", False), "the agent pins into bpffs")
        m, _ = host("/sys/kernel/btf")
        self.assertEqual(m["mountPath"], "/sys/kernel/btf")
        self.assertTrue(m["readOnly"])

    def test_probes_resources_and_ports(self):
        port = self.c["ports"][0]
        self.assertEqual(port["name"], "metrics")
        addr = next(a for a in self.c["args"] if a.startswith("--metrics-address="))
        self.assertEqual(int(addr.rsplit(":", 1)[1]), port["containerPort"])
        self.assertEqual(self.c["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(self.c["readinessProbe"]["httpGet"]["path"], "/readyz")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertIn(self.c[probe]["httpGet"]["port"], ("metrics", port["containerPort"]))
        for kind in ("requests", "limits"):
            self.assertEqual(set(self.c["resources"][kind]), {"cpu", "memory"}, kind)
        ann = self.ds["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(int(ann["prometheus.io/port"]), port["containerPort"])
        self.assertEqual(ann["prometheus.io/path"], "/metrics")

    def test_rolling_update_relies_on_hitless_restart(self):
        s = self.ds["spec"]["updateStrategy"]
        self.assertEqual(s["type"], "RollingUpdate")
        self.assertEqual(s["rollingUpdate"]["maxSurge"], 0, "two agents cannot own one node's hooks")
        self.assertGreaterEqual(s["rollingUpdate"]["maxUnavailable"], 1)
        keep = [f for f in re.findall(r"--[a-z-]+", agent_help()) if "keep" in f]
        if keep:
            self.assertTrue(set(keep) & set(flags_in(self.c["args"])),
                            f"the agent offers {keep} for hitless restarts but the DaemonSet does not pass it")
        else:
            print("note: this agent has no keep-on-exit flag yet: a rolling update detaches and re-attaches")

    def test_tolerations_and_interface_per_node(self):
        keys = {t.get("key") for t in self.pod["tolerations"]}
        self.assertIn("node-role.kubernetes.io/storage", keys)
        env = {e["name"]: e for e in self.c["env"]}
        self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")
        self.assertEqual(env["NVQOS_HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP")
        self.assertEqual(self.c["command"], ["/usr/local/bin/nvqos-entrypoint"])
        mounts = {m["name"]: m for m in self.c["volumeMounts"]}
        vols = {v["name"]: v for v in self.pod["volumes"]}
        name = next(n for n, v in vols.items() if v.get("configMap", {}).get("name") == "nvqos-interfaces")
        self.assertEqual(mounts[name]["mountPath"], "/etc/nvqos/interfaces")  # the entrypoint's default
        self.assertIn(("ConfigMap", "nvqos-interfaces"), self.objs)

    def test_policy_configmap_is_mounted_as_a_directory_and_valid(self):
        mounts = {m["name"]: m for m in self.c["volumeMounts"]}
        vols = {v["name"]: v for v in self.pod["volumes"]}
        name = next(n for n, v in vols.items() if v.get("configMap", {}).get("name") == "nvqos-policy")
        self.assertNotIn("subPath", mounts[name], "a subPath mount never sees ConfigMap updates")
        config = next(a for a in self.c["args"] if a.startswith("--config=")).split("=", 1)[1]
        key = os.path.relpath(config, mounts[name]["mountPath"])
        data = self.objs[("ConfigMap", "nvqos-policy")]["data"]
        self.assertIn(key, data)
        validate(self, data[key], "ConfigMap nvqos-policy")
        validate(self, (ROOT / "deploy" / "config" / "policy.json").read_text(), "deploy/config/policy.json")
        validate(self, (ROOT / "deploy" / "config" / "qos-classes.json").read_text(), "deploy/config/qos-classes.json")
        for what, text in (("ConfigMap nvqos-policy", data[key]),
                           ("deploy/config/policy.json", (ROOT / "deploy" / "config" / "policy.json").read_text())):
            policy = json.loads(text)
            classes = {c["name"]: c for c in policy["classes"]}
            self.assertEqual(set(classes), {"gold", "silver", "bronze"}, what)
            # NvqosTenantLatencyAboveSLO compares p99s with the class's p99 objectives: gold has them.
            p99 = {o["op"] for o in classes["gold"].get("objectives", []) if o["quantile"] == 0.99}
            self.assertLessEqual({"read", "write"}, p99, f"{what}: gold's p99 read/write objectives")

    def test_every_flag_passed_exists(self):
        help_text = agent_help()
        unit = (ROOT / "deploy" / "systemd" / "nvqos-agent.service").read_text()
        exec_lines = re.findall(r"^Exec\w+=(.*)$", unit.replace("\\\n", " "), re.M)
        unit_flags = [f for line in exec_lines if "nvqos-agent" in line for f in flags_in(shlex.split(line))]
        cleanup = self.objs.get(("DaemonSet", "nvqos-cleanup"))
        cleanup_flags = []
        if cleanup:
            for c in cleanup["spec"]["template"]["spec"]["initContainers"]:
                cleanup_flags += flags_in(c["command"] + c.get("args", []))
        for flag in flags_in(self.c["args"]) + unit_flags + cleanup_flags:
            self.assertIn(flag, help_text, f"{flag} is not an nvqos-agent option")

    def test_cleanup_daemonset_runs_cleanup_as_the_agent_would(self):
        cleanup = self.objs[("DaemonSet", "nvqos-cleanup")]["spec"]["template"]["spec"]
        init = cleanup["initContainers"][0]
        self.assertEqual(init["command"], ["/usr/local/sbin/nvqos-agent", "--cleanup"])
        self.assertEqual(init["securityContext"]["capabilities"], self.c["securityContext"]["capabilities"])
        self.assertEqual(init["image"], self.c["image"])
        self.assertTrue(cleanup["hostNetwork"])
        self.assertEqual(cleanup["tolerations"], self.pod["tolerations"])
        vols = {v["name"]: v for v in cleanup["volumes"]}
        bpffs = next(m for m in init["volumeMounts"] if vols[m["name"]].get("hostPath", {}).get("path") == "/sys/fs/bpf")
        self.assertEqual(bpffs["mountPath"], "/sys/fs/bpf")

    def test_service_and_servicemonitor_select_the_agents(self):
        svc = self.objs[("Service", "nvqos-agent")]
        labels = self.ds["spec"]["template"]["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        port = svc["spec"]["ports"][0]
        self.assertEqual((port["name"], port["port"], port["targetPort"]), ("metrics", 9465, "metrics"))
        self.assertEqual(svc["metadata"]["annotations"]["prometheus.io/scrape"], "true")
        sm = self.objs[("ServiceMonitor", "nvqos-agent")]
        for k, v in sm["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(svc["metadata"]["labels"].get(k), v)
        # job="nvqos-agent" (the alerts select it) comes from the Service label named by jobLabel.
        self.assertEqual(svc["metadata"]["labels"][sm["spec"]["jobLabel"]], "nvqos-agent")
        ep = sm["spec"]["endpoints"][0]
        self.assertEqual(ep["port"], "metrics")
        targets = {r["targetLabel"]: r for r in ep["relabelings"]}
        self.assertEqual(targets["node"]["sourceLabels"], ["__meta_kubernetes_pod_node_name"])
        self.assertIn("cluster", targets)

    def test_prometheusrule_carries_the_rule_file(self):
        pr = self.objs[("PrometheusRule", "nvqos-agent")]
        self.assertEqual(pr["spec"], yaml.safe_load(d.RULES.read_text()))
        names = {a for a, _ in d.alert_rules()}
        self.assertLessEqual({"NvqosAgentDown", "NvqosConfigReloadFailed", "NvqosTenantLatencyAboveSLO",
                              "NvqosTenantThrottledSustained", "NvqosTenantDropping", "NvqosFlowTableNearlyFull",
                              "NvqosSloMissedAtFloors"},
                             names)
        for g in pr["spec"]["groups"]:
            for r in g["rules"]:
                self.assertIn(r["labels"]["severity"], ("critical", "warning", "info"), r["alert"])
                self.assertTrue(r["annotations"]["summary"] and r["annotations"]["description"], r["alert"])
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(pr["spec"], f)
            f.flush()
            for path in (str(d.RULES), f.name):
                r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_promtool_accepts_the_scrape_configuration(self):
        job = yaml.safe_load((ROOT / "deploy" / "prometheus" / "scrape-annotations.yaml").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "prometheus.yml"
            (pathlib.Path(tmp) / "nvqos-rules.yaml").write_text(d.RULES.read_text())
            path.write_text(yaml.safe_dump(job))
            r = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
            if "kubernetes_sd_configs not found" in r.stdout + r.stderr:
                # Debian's Prometheus is built without Kubernetes discovery: check everything else, with
                # the same relabelling on a static target (test_prometheus.py runs it for real).
                sc = job["scrape_configs"][0]
                del sc["kubernetes_sd_configs"]
                sc["static_configs"] = [{"targets": ["127.0.0.1:9465"]}]
                path.write_text(yaml.safe_dump(job))
                r = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
                print("note: promtool here lacks Kubernetes discovery; checked the job with a static target")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


def validate(test, text, what):
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([agent(), "--validate", "--config", f.name], capture_output=True, text=True)
    test.assertEqual(r.returncode, 0, f"{what}: {r.stdout}{r.stderr}")


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        text = (ROOT / "deploy" / "Dockerfile").read_text()
        cls.stages = []
        for line in re.sub(r"\\\n", " ", text).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            inst, _, rest = line.partition(" ")
            if inst == "FROM":
                cls.stages.append({"from": rest, "steps": []})
            else:
                cls.stages[-1]["steps"].append((inst, " ".join(rest.split())))

    def test_multi_stage_on_debian_12_slim(self):
        self.assertEqual(len(self.stages), 2)
        self.assertEqual(self.stages[0]["from"], "debian:12-slim AS build")
        self.assertEqual(self.stages[1]["from"], "debian:12-slim")
        entry = dict(self.stages[1]["steps"])["ENTRYPOINT"]
        self.assertEqual(json.loads(entry), ["/usr/local/bin/nvqos-entrypoint"])

    def test_build_steps_are_the_readmes(self):
        readme = (ROOT / "README.md").read_text()
        m = re.search(r"## Build from source\n.*?```sh\n(.*?)```", readme, re.S)
        self.assertIsNotNone(m, "README.md has no 'Build from source' section with a sh block")
        readme_cmds = [normalise(c) for c in split_commands(m.group(1))]
        docker_cmds = [normalise(c) for inst, rest in self.stages[0]["steps"] if inst == "RUN"
                       for c in rest.split("&&")]
        docker_cmds = [c for c in docker_cmds if c not in (("apt-get", "update"), ("rm", "-rf /var/lib/apt/lists/*"))]
        self.assertEqual(readme_cmds, docker_cmds)
        # Every build package is one the project's own dependency script installs.
        deps = (ROOT / "scripts" / "install-deps.sh").read_text()
        listed = set(re.search(r"packages=\((.*?)\)", deps, re.S).group(1).split())
        self.assertLessEqual(set(install_packages(self.stages[0])), listed)

    def test_runtime_packages_cover_the_binaries_libraries(self):
        runtime = set(install_packages(self.stages[1]))
        b = pathlib.Path(BUILD)
        for binary in (b / "agent" / "nvqos-agent", b / "agent" / "nvqosctl", b / "tools" / "target" / "nvqos-target",
                       b / "tools" / "load" / "nvqos-load"):
            ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
            for lib in re.findall(r"=> (/\S+)", ldd):
                pkg = package_of(lib)
                if pkg in ("libc6", "libstdc++6", "libgcc-s1"):
                    continue  # in every Debian image
                self.assertIn(pkg, runtime, f"{binary.name} needs {lib} from {pkg}")


@functools.lru_cache(maxsize=None)
def dpkg_owners():
    """path -> package from dpkg's file lists (one pass; `dpkg -S` per library is slow)."""
    owners = {}
    for listing in pathlib.Path("/var/lib/dpkg/info").glob("*.list"):
        pkg = listing.name[:-len(".list")].split(":")[0]
        for line in listing.read_text(errors="replace").splitlines():
            if ".so" in line:
                owners[line] = pkg
    return owners


def package_of(lib):
    """The Debian package owning a shared library, whichever of its names (symlink, target, with or
    without the /usr of the merged-/usr layout) dpkg recorded."""
    for path in (lib, os.path.realpath(lib)):
        for candidate in (path, path[4:] if path.startswith("/usr/") else "/usr" + path):
            if candidate in dpkg_owners():
                return dpkg_owners()[candidate]
    raise AssertionError(f"no Debian package owns {lib}")


def split_commands(block):
    return [c for c in (x.strip() for x in re.sub(r"\\\n", " ", block).splitlines())
            if c and not c.startswith("#")]


def normalise(cmd):
    cmd = " ".join(re.sub(r"\s+#.*$", "", cmd).split())
    if cmd.startswith("apt-get install"):
        words = cmd.split()
        return ("apt-get install", tuple(sorted(w for w in words[2:] if not w.startswith("-"))))
    head, _, rest = cmd.partition(" ")
    return (head, rest)


def install_packages(stage):
    for inst, rest in stage["steps"]:
        for c in rest.split("&&") if inst == "RUN" else []:
            n = normalise(c.strip())
            if n[0] == "apt-get install":
                return n[1]
    return ()


class Entrypoint(unittest.TestCase):
    """The interface choice, with `echo` standing in for the agent."""
    script = str(ROOT / "deploy" / "container" / "nvqos-entrypoint.sh")

    def run_it(self, env, dirfiles):
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in dirfiles.items():
                pathlib.Path(tmp, name).write_text(text)
            full = {"PATH": os.environ["PATH"], "NVQOS_AGENT_BIN": "echo", "NVQOS_INTERFACES_DIR": tmp, **env}
            r = subprocess.run([self.script, "--config=/x"], env=full, capture_output=True, text=True)
        return r.returncode, r.stdout.strip(), r.stderr

    def test_order_of_sources(self):
        files = {"node-a": "ens1f0,ens1f1\n", "default": "eth0\n"}
        self.assertEqual(self.run_it({"NODE_NAME": "node-a"}, files)[1], "--interface ens1f0,ens1f1 --config=/x")
        self.assertEqual(self.run_it({"NODE_NAME": "node-b"}, files)[1], "--interface eth0 --config=/x")
        self.assertEqual(self.run_it({"NODE_NAME": "node-a", "NVQOS_INTERFACES": "bond0"}, files)[1],
                         "--interface bond0 --config=/x")
        self.assertEqual(self.run_it({"NODE_NAME": "n", "NVQOS_HOST_IP": "127.0.0.1"}, {})[1],
                         "--interface lo --config=/x")

    def test_no_source_is_an_error_that_says_what_to_set(self):
        rc, out, err = self.run_it({"NODE_NAME": "n"}, {})
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("nvqos-interfaces ConfigMap", err)
        rc, _, err = self.run_it({"NODE_NAME": "n", "NVQOS_HOST_IP": "192.0.2.77"}, {})
        self.assertEqual(rc, 1)
        self.assertIn("no interface holds the node address", err)


class Systemd(unittest.TestCase):
    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_unit_verifies(self):
        unit = (ROOT / "deploy" / "systemd" / "nvqos-agent.service").read_text()
        self.assertIn("CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN\n", unit)
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp, "nvqos-agent.service")
            # verify insists that ExecStart's program exists: point it at this build's agent.
            path.write_text(unit.replace("/usr/local/sbin/nvqos-agent", agent()))
            r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        complaints = [l for l in (r.stdout + r.stderr).splitlines() if "nvqos-agent.service" in l]
        self.assertEqual((r.returncode, complaints), (0, []))


class Dashboards(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.boards = d.load_dashboards()

    def test_generated_json_is_committed(self):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, str(ROOT / "dashboards" / "generate.py"), "--out", tmp], check=True,
                           capture_output=True)
            for name in self.boards:
                self.assertEqual(pathlib.Path(tmp, name).read_text(), (ROOT / "dashboards" / name).read_text(),
                                 f"dashboards/{name} differs from generate.py's output: run it")

    def test_schema_variables_and_links(self):
        self.assertEqual(set(self.boards), {"nvqos-overview.json", "nvqos-tenant-detail.json"})
        uids = {b["uid"] for b in self.boards.values()}
        for name, b in self.boards.items():
            self.assertGreaterEqual(b["schemaVersion"], 39, name)
            names = {v["name"] for v in b["templating"]["list"]}
            self.assertLessEqual({"datasource", "cluster", "node", "interface", "tenant", "class"}, names)
            ids = [p["id"] for p in b["panels"]]
            self.assertEqual(len(ids), len(set(ids)), name)
            for p in b["panels"]:
                g = p["gridPos"]
                self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
                if p["type"] != "row":
                    self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${datasource}"})
                    self.assertTrue(p["targets"], p["title"])
            # Each dashboard links to the other.
            others = uids - {b["uid"]}
            self.assertTrue(any(o in link["url"] for link in b["links"] for o in others), name)
        overview = self.boards["nvqos-overview.json"]
        links = [l for p in overview["panels"] for l in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]
        self.assertTrue(any("nvqos-tenant-detail" in l["url"] and "var-tenant=" in l["url"] for l in links))

    def test_issue_panels_present(self):
        titles = " | ".join(p["title"] for b in self.boards.values() for p in b["panels"])
        for words in ("p50 / p99 / p99.9", "SLO", "IOPS", "Throughput", "Throttled and dropped",
                      "guarantee and ceiling", "connections", "run time", "Map fill", "reload",
                      "QoS mechanism", "SLO compliance"):
            self.assertIn(words, titles)

    def test_every_metric_is_documented_or_agreed(self):
        documented = set(re.findall(r"`(nvqos_[a-z0-9_]+)`", (ROOT / "docs" / "metrics.md").read_text()))
        exprs = [t["expr"] for b in self.boards.values() for _, t in d.dashboard_targets(b)]
        exprs += [e for _, e in d.alert_rules()]
        exprs += [q for b in self.boards.values() for _, q, _ in d.query_variables(b)]
        used = {d.family_of(n, {"nvqos_nvme_command_latency_seconds"}) for e in exprs for n in d.metric_names(e)}
        unknown = sorted(used - documented - CONTRACT_METRICS - {"up"})
        self.assertEqual(unknown, [], "metrics neither in docs/metrics.md nor agreed in CONTRACTS.md")
        pending = sorted((used & CONTRACT_METRICS) - documented)
        if pending:
            print("note: agreed but not yet in docs/metrics.md: " + ", ".join(pending))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    args, rest = ap.parse_known_args()
    BUILD = os.path.abspath(args.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
