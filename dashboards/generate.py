#!/usr/bin/env python3
"""Writes the nvqos Grafana dashboards (dashboards/*.json) from one description.

Generated rather than hand-edited so that every panel uses the same selectors and template variables;
tests/deploy checks that the committed JSON is what this script writes, and evaluates every
expression against a real Prometheus scraping a real agent. Run `python3 dashboards/generate.py`
after editing.
"""
import argparse
import json
import pathlib

SCHEMA_VERSION = 39  # Grafana 10.4 / 11
DS = {"type": "prometheus", "uid": "${datasource}"}
OVERVIEW_UID = "nvqos-overview"
DETAIL_UID = "nvqos-tenant-detail"

# Selectors shared by every panel. `cluster` and `node` are target labels added by the scrape
# configuration (deploy/kubernetes/servicemonitor.yaml); the rest are the agent's own labels.
HOST = 'cluster=~"$cluster", node=~"$node"'
IFACE = HOST + ', interface=~"$interface"'
TENANT = IFACE + ', tenant=~"$tenant"'
ROLE = TENANT + ', role=~"$role"'
RATE = "[$__rate_interval]"
# 1 for each (agent, class) the selected tenant belongs to: multiplies class-level series down to
# the selected tenant's class.
TENANT_CLASS = 'group by (cluster, node, instance, class) (nvqos_tenant_info{' + HOST + ', tenant=~"$tenant"})'


def variable_query(name, label, query, *, include_all=True, multi=True, all_value=".*", regex="", hide=0):
    v = {
        "name": name, "label": label, "type": "query", "datasource": DS, "refresh": 2, "sort": 1,
        "definition": query, "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "includeAll": include_all, "multi": multi, "regex": regex, "hide": hide,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {},
        "options": [],
    }
    if include_all and all_value is not None:
        v["allValue"] = all_value
    return v


def common_variables(tenant_multi):
    # The tenant list follows the class filter: tenants the agents know, minus those that
    # nvqos_tenant_info puts in another class. With no class information (observe-only agents)
    # every tenant stays listed.
    tenants = ('query_result(group by (tenant) (nvqos_tenant_bytes_total{' + IFACE + '}) unless on (tenant) '
               'group by (tenant) (nvqos_tenant_info{' + HOST + ', class!~"$class"}))')
    return [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "options": [], "refresh": 1, "regex": ""},
        variable_query("cluster", "cluster", "label_values(nvqos_build_info, cluster)"),
        variable_query("node", "node", 'label_values(nvqos_build_info{cluster=~"$cluster"}, node)'),
        variable_query("interface", "interface", "label_values(nvqos_datapath_packets_total{" + HOST + "}, interface)"),
        variable_query("class", "class", "label_values(nvqos_tenant_info{" + HOST + "}, class)"),
        # No allValue: "All" expands to the listed tenants, so the class filter applies.
        variable_query("tenant", "tenant", tenants, include_all=tenant_multi, multi=tenant_multi, all_value=None,
                       regex='/tenant="([^"]+)"/'),
        {"name": "role", "label": "role", "type": "custom", "query": "initiator,target", "includeAll": True,
         "allValue": ".*", "multi": False, "hide": 0, "current": {"selected": True, "text": "All", "value": "$__all"},
         "options": []},
        {"name": "job", "type": "constant", "query": "nvqos-agent", "hide": 2, "label": "job", "options": [],
         "current": {"text": "nvqos-agent", "value": "nvqos-agent"}},
    ]


class Layout:
    """Places panels left to right, 24 grid units per row, and numbers them."""

    def __init__(self):
        self.panels, self.x, self.y, self.row_h, self.next_id = [], 0, 0, 0, 1

    def row(self, title):
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self._id(),
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def add(self, panel, w=12, h=8):
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self):
        self.y += self.row_h
        self.x, self.row_h = 0, 0

    def _id(self):
        self.next_id += 1
        return self.next_id - 1


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto", "range": not instant,
         "instant": instant, "format": fmt}
    return t


def refs(targets):
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def timeseries(title, unit, targets, description="", links=None, overrides=None, stack=False):
    defaults = {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0,
                                         "showPoints": "never", "spanNulls": False,
                                         "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}
    if links:
        defaults["links"] = links
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": refs(targets), "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"],
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title, unit, targets, description="", mappings=None, thresholds=None):
    return {"type": "stat", "title": title, "description": description, "datasource": DS, "targets": refs(targets),
            "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                         "thresholds": thresholds or {"mode": "absolute",
                                                                      "steps": [{"color": "green", "value": None}]}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                        "orientation": "auto", "justifyMode": "auto"}}


def table(title, targets, description="", links=None, unit="short"):
    defaults = {"unit": unit}
    if links:
        defaults["links"] = links
    return {"type": "table", "title": title, "description": description, "datasource": DS, "targets": refs(targets),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm"},
            "transformations": [{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True}}}]}


def heatmap(title, targets, description=""):
    return {"type": "heatmap", "title": title, "description": description, "datasource": DS, "targets": refs(targets),
            "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}, "overrides": []},
            "options": {"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1, "color": {"mode": "scheme",
                        "scheme": "Oranges", "steps": 64}, "tooltip": {"show": True, "yHistogram": True},
                        "rowsFrame": {"layout": "auto"}}}


# Series whose display name starts with "SLO " / "ceiling" / "guarantee" are limits: dashed lines.
def dashed(pattern, color):
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                           {"id": "custom.lineWidth", "value": 2},
                           {"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


LIMIT_LINES = [dashed("^SLO .*", "red"), dashed(".*guarantee.*", "green"), dashed(".*ceiling.*", "orange")]

TENANT_LINK = [{"title": "Tenant detail: ${__field.labels.tenant}", "targetBlank": False,
                "url": "/d/" + DETAIL_UID + "/nvqos-tenant-detail?${__url_time_range}&${datasource:queryparam}"
                       "&${cluster:queryparam}&${node:queryparam}&var-tenant=${__field.labels.tenant}"}]


def dashboard(uid, title, description, variables, panels, links):
    return {"uid": uid, "title": title, "description": description, "tags": ["nvqos", "nvme-tcp", "storage"],
            "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
            "timezone": "browser", "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "timepicker": {}, "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "templating": {"list": variables}, "panels": panels, "links": links,
            "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
                           {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}]}


def quantile_targets(by, legend_prefix):
    return [target(f'max by ({by}) (nvqos_nvme_command_latency_quantile_seconds{{{ROLE}, quantile="{q}"}})',
                   legend_prefix + " " + name)
            for q, name in (("0.5", "p50"), ("0.99", "p99"), ("0.999", "p99.9"))]


def overview():
    L = Layout()
    L.row("Tenants")
    L.add(timeseries(
        "Command latency p50 / p99 / p99.9 by tenant and op, class SLO (p99) dashed", "s",
        quantile_targets("tenant, op", "{{tenant}} {{op}}") +
        [target('max by (class, op) (nvqos_slo_objective_seconds{' + HOST + ', class=~"$class", quantile="0.99"})',
                "SLO {{class}} {{op}} p99")],
        "Quantiles of the commands completed in the last 60 s, timed in the kernel (worst agent when several "
        "see the tenant). Dashed: the p99 objective of each class.", TENANT_LINK, LIMIT_LINES), w=24, h=9)
    L.add(timeseries("IOPS by tenant and op", "iops",
                     [target(f"sum by (tenant, op) (rate(nvqos_nvme_commands_total{{{ROLE}}}{RATE}))",
                             "{{tenant}} {{op}}")],
                     "NVMe commands completed per second. With agents on initiators and targets, pick a role.",
                     TENANT_LINK))
    L.add(timeseries("Throughput by tenant (wire)", "bps",
                     [target(f"sum by (tenant, direction) (rate(nvqos_tenant_bytes_total{{{TENANT}}}{RATE})) * 8",
                             "{{tenant}} {{direction}}")],
                     "NVMe/TCP bits per second on the wire, IP header onwards, by direction seen from each host.",
                     TENANT_LINK))
    L.add(timeseries("Throttled and dropped packets by tenant", "pps",
                     [target(f"sum by (tenant) (rate(nvqos_tenant_throttled_total{{{TENANT}}}{RATE}))",
                             "{{tenant}} throttled"),
                      target(f"sum by (tenant, reason) (rate(nvqos_tenant_dropped_total{{{TENANT}}}{RATE}))",
                             "{{tenant}} dropped ({{reason}})")],
                     "Throttled: egress packets delayed (EDT) or held (HTB ceiling). Dropped: by reason.",
                     TENANT_LINK))
    L.add(timeseries("Open NVMe/TCP connections by tenant", "short",
                     [target(f"sum by (tenant) (nvqos_tenant_flows_active{{{TENANT}}})", "{{tenant}}")],
                     "Connections opened and not yet closed, summed over the selected agents.", TENANT_LINK))
    L.add(timeseries("Command errors, aborts and timeouts by tenant", "ops",
                     [target(f"sum by (tenant, status) (rate(nvqos_nvme_command_errors_total{{{ROLE}}}{RATE}))",
                             "{{tenant}} error ({{status}})"),
                      target(f"sum by (tenant) (rate(nvqos_nvme_commands_aborted_total{{{ROLE}}}{RATE}))",
                             "{{tenant}} aborted"),
                      target(f"sum by (tenant) (rate(nvqos_nvme_command_timeouts_total{{{ROLE}}}{RATE}))",
                             "{{tenant}} timed out")],
                     "Completions with an error status, commands in flight when their connection closed, and "
                     "commands never completed within 60 s.", TENANT_LINK))
    L.add(table("Tenants and classes",
                [target('max by (tenant, class) (nvqos_tenant_info{' + HOST + ', class=~"$class", tenant=~"$tenant"})',
                        instant=True, fmt="table")],
                "Each tenant's class as the agents report it. Click a tenant for its detail.", TENANT_LINK))

    L.row("Classes")
    L.add(timeseries(
        "Class egress throughput against guarantee and ceiling", "bps",
        [target('sum by (node, interface, class) (rate(nvqos_class_bytes_total{' + IFACE +
                ', class=~"$class", direction="egress"}' + RATE + ')) * 8', "{{class}} {{node}}/{{interface}}"),
         target('max by (class) (nvqos_class_guaranteed_bits_per_second{' + HOST + ', class=~"$class"})',
                "{{class}} guarantee"),
         target('max by (class) (nvqos_class_ceiling_bits_per_second{' + HOST + ', class=~"$class", op="any"})',
                "{{class}} ceiling"),
         target('max by (class) (nvqos_class_effective_ceiling_bits_per_second{' + IFACE + ', class=~"$class"})',
                "{{class}} effective ceiling (SLO controller)")],
        "Per link. For classes with scope per_tenant the guarantee and ceiling apply to each tenant.",
        overrides=LIMIT_LINES), w=12, h=9)
    L.add(timeseries(
        "Class IOPS against ceiling", "iops",
        [target('sum by (node, class) (rate(nvqos_nvme_commands_total{' + ROLE + '}' + RATE + ') '
                '* on (cluster, node, instance, tenant) group_left (class) nvqos_tenant_info{' + HOST +
                ', class=~"$class"})', "{{class}} {{node}}"),
         target('max by (class, op) (nvqos_class_ceiling_iops{' + HOST + ', class=~"$class"})',
                "{{class}} ceiling {{op}}"),
         target('max by (class) (nvqos_class_effective_ceiling_iops{' + IFACE + ', class=~"$class"})',
                "{{class}} effective ceiling (SLO controller)")],
        "Commands completed per second by the class's tenants on each node.", overrides=LIMIT_LINES), w=12, h=9)

    L.row("SLO compliance")
    L.add(timeseries("SLO compliance by class", "percentunit",
                     [target('min by (class, op, quantile) (nvqos_slo_compliance_ratio{' + HOST +
                             ', class=~"$class"})', "{{class}} {{op}} q{{quantile}}")],
                     "Share of the SLO controller's windows (one per control interval) of the last 5 minutes in "
                     "which the class's quantile met its objective; worst agent."), w=12)
    L.add(timeseries(
        "Effective ceilings set by the SLO controller against the static ones", "bps",
        [target('min by (node, interface, class) (nvqos_class_effective_ceiling_bits_per_second{' + IFACE +
                ', class=~"$class"})', "{{class}} {{node}}/{{interface}}"),
         target('max by (class) (nvqos_class_ceiling_bits_per_second{' + HOST + ', class=~"$class", op="any"})',
                "{{class}} static ceiling")],
        "What the controller lets each lower-priority class use on each link: lowered while an objective is "
        "at risk, raised back with headroom; a flat line at the static ceiling (or the link) means nothing is "
        "at risk. In dry_run: what it would set.", overrides=LIMIT_LINES), w=12)
    L.add(table("SLO objectives",
                [target('max by (class, op, quantile) (nvqos_slo_objective_seconds{' + HOST + ', class=~"$class"})',
                        instant=True, fmt="table")], "Objectives declared per class in the policy.", unit="s"), w=6)
    L.add(stat("SLO controller mode", "short",
               [target('count by (mode) (nvqos_slo_controller_info{' + HOST + '})', "{{mode}}")],
               "Agents per controller mode: on adjusts effective ceilings, dry_run only computes them."), w=6)
    L.add(timeseries(
        "SLO windows missed, and missed with the neighbours at their floors", "percentunit",
        [target('sum by (class, op, quantile, outcome) (rate(nvqos_slo_windows_total{' + IFACE +
                ', class=~"$class", outcome!="met"}' + RATE + ')) / ignoring (outcome) group_left '
                'sum by (class, op, quantile) (rate(nvqos_slo_windows_total{' + IFACE + ', class=~"$class"}' +
                RATE + '))', "{{class}} {{op}} q{{quantile}} {{outcome}}")],
        "Share of the controller's windows that missed the objective. missed_at_floor: every lower class on "
        "the link was already at its floor, so the controller had nothing left to cut and the latency is not "
        "(only) the neighbours' (runbook NvqosSloMissedAtFloors)."), w=12)

    L.row("Agent health")
    L.add(stat("Agents up", "short",
               [target('sum(up{job="$job", ' + HOST + '})', "up"),
                target('count(up{job="$job", ' + HOST + '} == 0) or vector(0)', "down")],
               "Scrape targets of the nvqos-agent job answering / not answering."), w=6, h=6)
    L.add(stat("Config reload status", "short",
               [target('min by (node) (nvqos_config_reload_success{' + HOST + '})', "{{node}}")],
               "1: the last config load succeeded. 0: refused, the previous policy is in force (see the log).",
               mappings=[{"type": "value", "options": {"0": {"text": "refused", "color": "red"},
                                                       "1": {"text": "ok", "color": "green"}}}]), w=6, h=6)
    L.add(table("Active QoS mechanism",
                [target('max by (node, interface, direction, mechanism) (nvqos_qos_mechanism_info{' + IFACE + '})',
                        instant=True, fmt="table")],
                "What enforces each direction, chosen at runtime from the kernel's features."), w=6, h=6)
    L.add(table("Attached programs",
                [target('max by (node, interface, hook, mode, exclusive) (nvqos_datapath_attached_info{' +
                        IFACE + '})', instant=True, fmt="table")], "tc and XDP programs per interface."), w=6, h=6)
    L.add(timeseries("BPF program run time per packet", "ns",
                     [target('sum by (node, interface, program) (rate(nvqos_bpf_program_run_time_seconds_total{' +
                             IFACE + '}' + RATE + ')) * 1e9 / sum by (node, interface, program) '
                             '(rate(nvqos_bpf_program_runs_total{' + IFACE + '}' + RATE + '))',
                             "{{node}}/{{interface}} {{program}}")],
                     "Average kernel time of each nvqos program per run (needs kernel.bpf_stats_enabled=1)."))
    L.add(timeseries("Map fill", "percentunit",
                     [target('sum by (node, interface) (nvqos_tenant_flows_active{' + IFACE + '}) / '
                             'max by (node, interface) (nvqos_flow_table_capacity_entries{' + IFACE + '})',
                             "{{node}}/{{interface}} flow table")],
                     "Open connections against limits.max_flows (alert at 85%)."))
    L.add(timeseries("Map insert failures", "ops",
                     [target('sum by (node, interface) (rate(nvqos_datapath_flow_insert_failures_total{' + IFACE +
                             '}' + RATE + '))', "{{node}}/{{interface}} flows"),
                      target('sum by (node, interface) (rate(nvqos_nvme_inflight_insert_failures_total{' + IFACE +
                             '}' + RATE + '))', "{{node}}/{{interface}} commands")],
                     "Flows or commands the kernel could not track because a map was full."))
    L.add(timeseries("Data path anomalies", "ops",
                     [target('sum by (node, interface) (rate(nvqos_datapath_parse_errors_total{' + IFACE + '}' +
                             RATE + '))', "{{node}}/{{interface}} parse errors"),
                      target('sum by (node, interface) (rate(nvqos_nvme_desync_total{' + IFACE + '}' + RATE + '))',
                             "{{node}}/{{interface}} PDU desync")],
                     "Malformed headers (passed untouched) and PDU walks that lost the stream."))
    L.add(timeseries("Telemetry read duration", "s",
                     [target('max by (node) (nvqos_telemetry_read_duration_seconds{' + HOST + '})', "{{node}}")],
                     "Time of the agent's last read of the kernel maps."))
    L.add(timeseries("Interfaces attached and restarts adopted", "short",
                     [target('min by (node, interface) (nvqos_interface_present{' + IFACE + '})',
                             "{{node}}/{{interface}} present"),
                      target('max by (node, interface) (nvqos_restart_adopted_total{' + IFACE + '})',
                             "{{node}}/{{interface}} restarts adopted")],
                     "1 while the interface exists with the programs attached. Restarts adopted: agent starts "
                     "that took over the pinned data path (a rolling update adds one per node)."))
    L.add(timeseries("Connections refused by subsystem access rules", "ops",
                     [target('sum by (node, interface, subsystem) (rate(nvqos_access_denied_total{' + IFACE + '}' +
                             RATE + '))', "{{node}}/{{interface}} {{subsystem}}")],
                     "Fabrics Connects of hosts a subsystem's access rules refuse (or would refuse, in dry run)."))
    L.add(table("Agent versions",
                [target('count by (version) (nvqos_build_info{' + HOST + '})', instant=True, fmt="table")],
                "Agents per version (during a rolling update both show)."))
    return dashboard(OVERVIEW_UID, "nvqos / Overview",
                     "Per-tenant NVMe/TCP latency, throughput, QoS and agent health.", common_variables(True),
                     L.panels, [{"title": "Tenant detail", "type": "link", "icon": "dashboard", "includeVars": True,
                                 "keepTime": True, "url": "/d/" + DETAIL_UID + "/nvqos-tenant-detail",
                                 "tooltip": "one tenant: latency, limits, connections", "targetBlank": False,
                                 "asDropdown": False, "tags": []}])


def tenant_detail():
    L = Layout()
    L.row("Latency")
    L.add(timeseries(
        "Command latency p50 / p99 / p99.9 by op and role, class SLO dashed", "s",
        quantile_targets("op, role", "{{op}} {{role}}") +
        [target("max by (op, quantile) (nvqos_slo_objective_seconds{" + HOST + "} "
                "* on (cluster, node, instance, class) group_left () " + TENANT_CLASS + ")",
                "SLO {{op}} q{{quantile}}")],
        "Quantiles over the last 60 s; dashed: every objective of the tenant's class."),
        w=24, h=9)
    L.add(heatmap("Command latency distribution",
                  [target("sum by (le) (increase(nvqos_nvme_command_latency_seconds_bucket{" + ROLE + "}" + RATE +
                          "))", "{{le}}", fmt="heatmap")],
                  "Commands per latency bucket (coarse buckets of the histogram)."))
    L.add(timeseries("p99 by node and op", "s",
                     [target('max by (node, op, role) (nvqos_nvme_command_latency_quantile_seconds{' + ROLE +
                             ', quantile="0.99"})', "{{node}} {{op}} {{role}}")],
                     "Where the tail comes from."))
    L.row("Throughput")
    L.add(timeseries("IOPS by op", "iops",
                     [target("sum by (op, role) (rate(nvqos_nvme_commands_total{" + ROLE + "}" + RATE + "))",
                             "{{op}} {{role}}")]), w=8)
    L.add(timeseries("Data by op", "Bps",
                     [target("sum by (op, role) (rate(nvqos_nvme_bytes_total{" + ROLE + "}" + RATE + "))",
                             "{{op}} {{role}}")], "Bytes of completed commands."), w=8)
    L.add(timeseries("Wire throughput against class ceiling", "bps",
                     [target("sum by (direction) (rate(nvqos_tenant_bytes_total{" + TENANT + "}" + RATE + ")) * 8",
                             "{{direction}}"),
                      target('max by (op) (nvqos_class_ceiling_bits_per_second{' + HOST + '} '
                             '* on (cluster, node, instance, class) group_left () ' + TENANT_CLASS + ')',
                             "ceiling {{op}}"),
                      target('max by (op) (nvqos_class_guaranteed_bits_per_second{' + HOST + '} '
                             '* on (cluster, node, instance, class) group_left () ' + TENANT_CLASS + ')',
                             "guarantee")],
                     overrides=LIMIT_LINES), w=8)
    L.add(timeseries("Commands in flight", "short",
                     [target("sum by (op, role) (nvqos_nvme_commands_in_flight{" + ROLE + "})", "{{op}} {{role}}")],
                     "Submitted and not yet completed (queue depth seen on the wire)."), w=8)
    L.add(timeseries("Errors, aborts, lost and timed-out commands", "ops",
                     [target("sum by (status) (rate(nvqos_nvme_command_errors_total{" + ROLE + "}" + RATE + "))",
                             "error {{status}}"),
                      target("sum(rate(nvqos_nvme_commands_aborted_total{" + ROLE + "}" + RATE + "))", "aborted"),
                      target("sum(rate(nvqos_nvme_commands_lost_total{" + ROLE + "}" + RATE + "))", "lost"),
                      target("sum(rate(nvqos_nvme_command_timeouts_total{" + ROLE + "}" + RATE + "))",
                             "timed out")]), w=8)
    L.add(table("Class", [target('max by (tenant, class) (nvqos_tenant_info{' + HOST + ', tenant=~"$tenant"})',
                                 instant=True, fmt="table")], "The tenant's class."), w=8)
    L.row("Policy")
    L.add(timeseries("Throttled and dropped packets", "pps",
                     [target("sum by (node, interface) (rate(nvqos_tenant_throttled_total{" + TENANT + "}" + RATE +
                             "))", "throttled {{node}}/{{interface}}"),
                      target("sum by (reason) (rate(nvqos_tenant_dropped_total{" + TENANT + "}" + RATE + "))",
                             "dropped ({{reason}})")]), w=8)
    L.add(timeseries("Burst balance (bytes)", "bytes",
                     [target("max by (node, interface) (nvqos_tenant_burst_balance_bytes{" + TENANT + "})",
                             "{{node}}/{{interface}}")], "Credit left above the ceiling after idle time."), w=8)
    L.add(timeseries("Burst balance (commands)", "short",
                     [target("max by (node, interface) (nvqos_tenant_burst_balance_ios{" + TENANT + "})",
                             "{{node}}/{{interface}}")]), w=8)
    L.add(timeseries("SLO compliance of the tenant's class", "percentunit",
                     [target("min by (op, quantile) (nvqos_slo_compliance_ratio{" + HOST + "} "
                             "* on (cluster, node, instance, class) group_left () " + TENANT_CLASS + ")",
                             "{{op}} q{{quantile}}")]), w=12)
    L.add(timeseries("Effective ceilings set by the SLO controller on the tenant's links", "bps",
                     [target("min by (node, interface, class) (nvqos_class_effective_ceiling_bits_per_second{" +
                             IFACE + "} * on (cluster, node, instance, interface) group_left () group by (cluster, "
                             "node, instance, interface) (nvqos_tenant_bytes_total{" + TENANT + "}))",
                             "{{class}} {{node}}/{{interface}}")],
                     "Every adapted class on the links that carry this tenant: for a tenant of a protected "
                     "class, how far its neighbours are cut for it; for one of an adapted class, its own "
                     "class's ceiling in force."), w=12)
    L.row("Connections")
    L.add(timeseries("Open connections by node", "short",
                     [target("sum by (node, interface) (nvqos_tenant_flows_active{" + TENANT + "})",
                             "{{node}}/{{interface}}")]))
    L.add(timeseries("Connections opened and closed", "ops",
                     [target("sum(rate(nvqos_tenant_flows_opened_total{" + TENANT + "}" + RATE + "))", "opened"),
                      target("sum(rate(nvqos_tenant_flows_closed_total{" + TENANT + "}" + RATE + "))", "closed")]))
    variables = common_variables(False)
    return dashboard(DETAIL_UID, "nvqos / Tenant detail", "One tenant: latency against its class SLO, "
                     "throughput against its limits, policy effects and connections.", variables, L.panels,
                     [{"title": "Overview", "type": "link", "icon": "dashboard", "includeVars": True,
                       "keepTime": True, "url": "/d/" + OVERVIEW_UID + "/nvqos-overview", "tooltip": "all tenants",
                       "targetBlank": False, "asDropdown": False, "tags": []}])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=pathlib.Path(__file__).resolve().parent, type=pathlib.Path,
                    help="directory to write to (default: dashboards/)")
    out = ap.parse_args().out
    for name, board in (("nvqos-overview.json", overview()), ("nvqos-tenant-detail.json", tenant_detail())):
        (out / name).write_text(json.dumps(board, indent=2, sort_keys=False) + "\n")
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
