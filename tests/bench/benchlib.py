"""What the benchmark scripts share: two network namespaces joined by a veth pair, and the agent,
target and load generator started inside them. Every object removes what it created on exit, also
when the benchmark fails half-way."""
import json, os, re, signal, subprocess, sys, tempfile, threading, time


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def progress(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_dir(default_generated):
    """The build directory: $NVQOS_BUILD_DIR, the one CMake wrote into a generated script, or ./build."""
    if os.environ.get("NVQOS_BUILD_DIR"):
        return os.path.abspath(os.environ["NVQOS_BUILD_DIR"])
    if default_generated.startswith("$" + "<"):
        return os.path.abspath("build")
    return os.path.abspath(default_generated)


def write_json(path, results):
    """Writes the results as indented JSON to `path` (a benchmark's --json), if one was given."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        if m:
            cpu = m.group(1).strip()
    return {"kernel": os.uname().release, "cpus": os.cpu_count(), "cpu_model": cpu}


class VethLab:
    """Namespaces `server` and `client` joined by one veth pair, 10.<net>.0.1/24 and .2/24."""

    def __init__(self, tag, net=203, extra_server_addrs=0):
        pid = os.getpid()
        self.server_ns, self.client_ns = f"nvqb{tag}s{pid}", f"nvqb{tag}c{pid}"
        self.server_if, self.client_if = f"nvq{tag}s{pid % 10000}", f"nvq{tag}c{pid % 10000}"
        self.server_ip, self.client_ip = f"10.{net}.0.1", f"10.{net}.0.2"
        self.extra_server_ips = [f"10.{net}.1.{i + 1}" for i in range(extra_server_addrs)]

    def __enter__(self):
        try:
            for ns in (self.server_ns, self.client_ns):
                sh(f"ip netns add {ns} && ip -n {ns} link set lo up")
            sh(f"ip link add {self.server_if} netns {self.server_ns} type veth peer name {self.client_if} "
               f"netns {self.client_ns}")
            sh(f"ip -n {self.server_ns} addr add {self.server_ip}/16 dev {self.server_if}")
            sh(f"ip -n {self.client_ns} addr add {self.client_ip}/16 dev {self.client_if}")
            for ip in self.extra_server_ips:
                sh(f"ip -n {self.server_ns} addr add {ip}/16 dev {self.server_if}")
            sh(f"ip -n {self.server_ns} link set {self.server_if} up && ip -n {self.client_ns} link set {self.client_if} up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(f"ip netns del {ns}", shell=True, capture_output=True)

    def in_ns(self, side, cmd):
        ns = self.server_ns if side == "server" else self.client_ns
        return f"ip netns exec {ns} {cmd}"


class Agent:
    """nvqos-agent in one namespace of a VethLab, on that side's interface."""

    def __init__(self, build, lab, side="server", config=None, port=9467, cpu=None, extra_args=()):
        self.lab, self.side, self.port = lab, side, port
        self.tmp = tempfile.mkdtemp(prefix="nvqos-bench-agent")
        self.log_path = os.path.join(self.tmp, "agent.log")
        self.socket = os.path.join(self.tmp, "agent.sock")
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.tmp, "config.json")
            self.write_config(config)
        iface = lab.server_if if side == "server" else lab.client_if
        ns = lab.server_ns if side == "server" else lab.client_ns
        cmd = ["ip", "netns", "exec", ns]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        cmd += [os.path.join(build, "agent", "nvqos-agent"), "--interface", iface,
                "--metrics-address", f"127.0.0.1:{port}", "--admin-socket", self.socket, *extra_args]
        if self.config_path:
            cmd += ["--config", self.config_path]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited: " + open(self.log_path).read())
            if subprocess.run(lab.in_ns(side, f"curl -sf -o /dev/null http://127.0.0.1:{port}/readyz"),
                              shell=True).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("agent did not become ready: " + open(self.log_path).read())

    def write_config(self, config):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            json.dump(config, f)
        os.rename(tmp, self.config_path)

    def get(self, path):
        return sh(self.lab.in_ns(self.side, f"curl -sf http://127.0.0.1:{self.port}{path}"))

    def metrics(self):
        return self.get("/metrics")

    def reload(self):
        """POST /v1/reload on the admin socket; raises if the agent refused the config."""
        return sh(f"curl -sf --unix-socket {self.socket} -X POST http://nvqos/v1/reload")

    def rss_bytes(self):
        with open(f"/proc/{self.agent_pid()}/status") as f:
            return int(re.search(r"VmRSS:\s*(\d+) kB", f.read()).group(1)) * 1024

    def agent_pid(self):
        # `ip netns exec` execs the agent (and taskset execs too), so the pid is the agent's.
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        subprocess.run(["rm", "-rf", self.tmp])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def metric_values(text, name, **labels):
    """Every sample of `name` whose labels include `labels`, as (labels dict, value)."""
    out = []
    for m in re.finditer(r"^" + re.escape(name) + r"(?:\{([^}]*)\})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            out.append((got, float(m.group(2))))
    return out


class Target:
    """nvqos-target in the lab's server namespace on all its addresses, one subsystem, any host allowed."""

    SUBNQN = "nqn.2026-11.io.nvqos:bench"

    def __init__(self, build, lab, cpu=None, port=4420, extra_args=()):
        cmd = ["ip", "netns", "exec", lab.server_ns]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        cmd += [os.path.join(build, "tools", "target", "nvqos-target")]
        for ip in [lab.server_ip, *lab.extra_server_ips]:
            cmd += ["--listen", f"{ip}:{port}"]
        cmd += ["--subsystem", self.SUBNQN, "--namespace", "1G:4096", "--allow-any-host", *extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nvqos-target exited: " + self.proc.stderr.read())
            if subprocess.run(lab.in_ns("server", f"ss -Hltn sport = :{port}"), shell=True, capture_output=True,
                              text=True).stdout.strip():
                return
            time.sleep(0.05)
        raise RuntimeError("nvqos-target did not listen")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_load(build, lab, args, cpu=None, target_ip=None):
    """nvqos-load in the client namespace against the lab's target; returns its --json report."""
    cmd = lab.in_ns("client", "")
    if cpu is not None:
        cmd += f"taskset -c {cpu} "
    cmd += (f"{os.path.join(build, 'tools', 'load', 'nvqos-load')} --target {target_ip or lab.server_ip}:4420 "
            f"--subnqn {Target.SUBNQN} --json --progress off {args}")
    return json.loads(sh(cmd))


class BackgroundLoad:
    """run_load() on a thread, started at once; join() returns its report or raises its error."""

    def __init__(self, build, lab, args, target_ip=None):
        self.report, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(build, lab, args, target_ip))
        self.thread.start()

    def _run(self, build, lab, args, target_ip):
        try:
            self.report = run_load(build, lab, args, target_ip=target_ip)
        except Exception as e:  # raised by join()
            self.error = e

    def join(self):
        self.thread.join()
        if self.error:
            raise self.error
        return self.report


def run_loads_together(build, lab, jobs):
    """nvqos-load jobs {name: (target_ip, args)} at the same time; returns ({name: report}, [error naming its job])."""
    loads = {name: BackgroundLoad(build, lab, args, target_ip=ip) for name, (ip, args) in jobs.items()}
    reports, errors = {}, []
    for name, load in loads.items():
        try:
            reports[name] = load.join()
        except Exception as e:
            errors.append(f"{name}: {e}")
    return reports, errors
