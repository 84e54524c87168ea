"""What the deploy tests share: the dashboards' and alert rules' PromQL, pulled apart.

Nothing here talks to a network; test_prometheus.py evaluates what these functions return against a
real Prometheus, test_manifests.py checks the files themselves.
"""
import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "nvqos-rules.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"


def load_yaml_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifests():
    """Every Kubernetes object in deploy/kubernetes, keyed by (kind, name)."""
    out = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            if "kind" in doc and doc["kind"] != "Kustomization":
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def dashboard_targets(board):
    """(panel title, target) of every query target of every panel, rows' nested panels included."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", ""), t))
            walk(p.get("panels", []))

    walk(board.get("panels", []))
    return out


def load_dashboards():
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def query_variables(board):
    """(name, PromQL selector or expression) of each query variable: the inner expression of
    label_values(EXPR, label) / query_result(EXPR)."""
    out = []
    for v in board["templating"]["list"]:
        if v.get("type") != "query":
            continue
        q = v["definition"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q, re.S)
        if m:
            out.append((v["name"], m.group(1), m.group(2)))
            continue
        m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
        if m:
            out.append((v["name"], m.group(1), None))
            continue
        raise ValueError(f"variable {v['name']}: unsupported query {q!r}")
    return out


def alert_rules(path=RULES):
    with open(path) as f:
        doc = yaml.safe_load(f)
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"] if "alert" in r]


_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def _top_level_spans(expr):
    """Yields (index, char) of characters outside quotes, braces, brackets and parentheses."""
    depth, quote, i = 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0:
            yield i, c
        i += 1


def signal_of(expr):
    """The left side of an alert expression's last top-level comparison ("<signal> > threshold"):
    what must return data for the rule to be able to fire at all."""
    last = None
    chars = dict(_top_level_spans(expr))
    for i in sorted(chars):
        two = expr[i:i + 2]
        if two in ("==", "!=", ">=", "<="):
            if i - 1 not in chars or expr[i - 1] not in "=!<>":
                last = i
        elif expr[i] in "<>" and expr[i + 1:i + 2] != "=" and (i == 0 or expr[i - 1] not in "=!<>"):
            last = i
    return expr[:last].strip() if last is not None else expr.strip()


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_IDENT = re.compile(r"(?<![\w:$])([a-zA-Z_:][\w:]*)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "sum", "min", "max", "avg", "group", "count", "stddev", "stdvar", "topk",
             "bottomk", "quantile", "count_values"}


def metric_names(expr):
    """Metric names an expression selects (identifiers that are not functions, keywords or labels)."""
    text = _MATCHERS.sub("{}", _STRINGS.sub('""', expr))
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"\1", text)
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(1)
        rest = text[m.end():].lstrip()
        if name in _KEYWORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"\d+(e\d+)?", name):
            continue
        names.add(name)
    return names


def family_of(name, histogram_families):
    """The family a sample name belongs to (histograms' _bucket/_sum/_count)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in histogram_families:
            return name[: -len(suffix)]
    return name


def substitute(expr, values):
    """Replaces Grafana's $var / ${var} / ${var:...} with test values."""
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)", repl, expr)


def exported_families(metrics_text):
    """(every family with a TYPE line, histogram families, families with at least one sample)."""
    families, histograms, with_samples = set(), set(), set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families.add(name)
            if kind.strip() == "histogram":
                histograms.add(name)
        elif line and not line.startswith("#"):
            with_samples.add(family_of(re.match(r"[\w:]+", line).group(0), histograms))
    return families, histograms, with_samples
