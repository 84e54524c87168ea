#include <gtest/gtest.h>

#include "metrics.hpp"

namespace nvqos::agent {
namespace {

Snapshot one_interface() {
  Snapshot s;
  s.taken = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  InterfaceCounters ifc;
  ifc.interface = "eth0";
  ifc.flow_capacity = 4096;
  TenantCounters gold;
  gold.id = 1;
  gold.name = "gold";
  gold.stats.bytes[NVQOS_DIR_INGRESS] = 1500;
  gold.stats.payload_bytes[NVQOS_DIR_EGRESS] = 1000;
  gold.stats.packets[NVQOS_DIR_INGRESS] = 3;
  gold.stats.flows_opened = 5;
  gold.stats.flows_closed = 2;
  ifc.tenants.push_back(gold);
  ifc.datapath.parse_errors = 7;
  ifc.attachments.push_back({"tc_ingress", "clsact", false});
  ifc.attachments.push_back({"xdp", "native", true});
  s.interfaces.push_back(ifc);
  return s;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(Metrics, RendersTenantCountersWithUnitsAndLabels) {
  AgentStatus st;
  st.version = "1.2.3";
  std::string text = render_metrics(one_interface(), st);
  EXPECT_TRUE(has_line(text, "nvqos_tenant_bytes_total{interface=\"eth0\",tenant=\"gold\",direction=\"ingress\"} 1500"))
      << text;
  EXPECT_TRUE(has_line(text, "nvqos_tenant_payload_bytes_total{interface=\"eth0\",tenant=\"gold\",direction=\"egress\"} 1000"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_packets_total{interface=\"eth0\",tenant=\"gold\",direction=\"ingress\"} 3"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_flows_active{interface=\"eth0\",tenant=\"gold\"} 3"));
  EXPECT_TRUE(has_line(text, "nvqos_datapath_parse_errors_total{interface=\"eth0\"} 7"));
  EXPECT_TRUE(has_line(text, "nvqos_flow_table_capacity_entries{interface=\"eth0\"} 4096"));
  EXPECT_TRUE(has_line(text, "nvqos_datapath_attached_info{interface=\"eth0\",hook=\"xdp\",mode=\"native\",exclusive=\"true\"} 1"));
  EXPECT_TRUE(has_line(text, "nvqos_build_info{version=\"1.2.3\"} 1"));
  EXPECT_TRUE(has_line(text, "# TYPE nvqos_tenant_bytes_total counter"));
  EXPECT_TRUE(has_line(text, "# TYPE nvqos_tenant_flows_active gauge"));
}

TEST(Metrics, TableFillAndAgentMemory) {
  Snapshot s = one_interface();
  s.interfaces[0].tables = {{"flow_table", 1000, 4096}, {"handshakes", 16384, 16384}, {"inflight_cmds", 7, 262144}};
  s.resident_memory_bytes = 12345678;
  const std::string text = render_metrics(s, AgentStatus{});
  EXPECT_TRUE(has_line(text, "nvqos_datapath_table_entries{interface=\"eth0\",table=\"flow_table\"} 1000")) << text;
  EXPECT_TRUE(has_line(text, "nvqos_datapath_table_entries{interface=\"eth0\",table=\"handshakes\"} 16384"));
  EXPECT_TRUE(has_line(text, "nvqos_datapath_table_capacity_entries{interface=\"eth0\",table=\"inflight_cmds\"} 262144"));
  EXPECT_TRUE(has_line(text, "nvqos_agent_resident_memory_bytes 12345678"));
  EXPECT_TRUE(has_line(text, "# TYPE nvqos_datapath_table_entries gauge"));
}

TEST(Metrics, ActiveFlowsNeverNegative) {
  Snapshot s = one_interface();
  s.interfaces[0].tenants[0].stats.flows_opened = 1;
  s.interfaces[0].tenants[0].stats.flows_closed = 4;
  std::string text = render_metrics(s, AgentStatus{});
  EXPECT_TRUE(has_line(text, "nvqos_tenant_flows_active{interface=\"eth0\",tenant=\"gold\"} 0"));
}

TEST(Metrics, ProgramRunTimeInSecondsPerProgram) {
  Snapshot s = one_interface();
  s.interfaces[0].programs.push_back({"tc_ingress", 2'500'000'000, 100});
  std::string text = render_metrics(s, AgentStatus{});
  EXPECT_TRUE(has_line(text, "nvqos_bpf_program_run_time_seconds_total{interface=\"eth0\",program=\"tc_ingress\"} 2.5"))
      << text;
  EXPECT_TRUE(has_line(text, "nvqos_bpf_program_runs_total{interface=\"eth0\",program=\"tc_ingress\"} 100"));
}

TEST(Metrics, ReloadStatusIsExported) {
  AgentStatus st;
  st.last_reload_success = false;
  st.reloads_total = 4;
  st.reload_failures_total = 1;
  st.last_reload_timestamp_seconds = 1700000001;
  std::string text = render_metrics(Snapshot{}, st);
  EXPECT_TRUE(has_line(text, "nvqos_config_reload_success 0"));
  EXPECT_TRUE(has_line(text, "nvqos_config_reloads_total 4"));
  EXPECT_TRUE(has_line(text, "nvqos_config_reload_failures_total 1"));
  EXPECT_NE(text.find("nvqos_config_last_reload_timestamp_seconds 1700000001"), std::string::npos);
}

TEST(Metrics, RendersQosMechanismsClassesAndThrottling) {
  Snapshot s = one_interface();
  auto& ifc = s.interfaces[0];
  ifc.tenants[0].class_name = "gold";
  ifc.tenants[0].stats.bytes[NVQOS_DIR_EGRESS] = 4000;
  TenantCounters g2;
  g2.id = 2;
  g2.name = "g2";
  g2.class_name = "gold";
  g2.stats.bytes[NVQOS_DIR_EGRESS] = 1000;
  ifc.tenants.push_back(g2);
  ifc.qos.egress_mechanisms = {"htb"};
  ifc.qos.unenforced.push_back({"gold", "ceiling_iops", "no sch_fq"});
  TenantQosCounters tq;
  tq.tenant = "gold";
  tq.class_name = "gold";
  tq.throttled = 42;
  tq.burst_balance_bytes = -1500;
  tq.burst_balance_ios = 7;
  ifc.qos.tenants.push_back(tq);
  TenantQosCounters htb_only;  // no EDT IOPS limiter: no IO balance series
  htb_only.tenant = "bronze";
  htb_only.class_name = "bronze";
  ifc.qos.tenants.push_back(htb_only);
  ClassSpec gold;
  gold.name = "gold";
  gold.guaranteed_bps = 200'000'000;
  gold.ceiling_bps = 800'000'000;
  gold.write_ceiling_iops = 5000;
  s.qos.classes.push_back(gold);
  s.qos.tenant_class = {{"default", ""}, {"gold", "gold"}, {"g2", "gold"}};
  std::string text = render_metrics(s, AgentStatus{});
  EXPECT_TRUE(has_line(text, "nvqos_qos_mechanism_info{interface=\"eth0\",direction=\"egress\",mechanism=\"htb\"} 1"))
      << text;
  EXPECT_TRUE(has_line(text, "nvqos_qos_mechanism_info{interface=\"eth0\",direction=\"ingress\",mechanism=\"none\"} 1"));
  EXPECT_TRUE(has_line(text, "nvqos_qos_unenforced_limits{interface=\"eth0\",class=\"gold\",limit=\"ceiling_iops\"} 1"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_info{tenant=\"default\",class=\"\"} 1"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_info{tenant=\"g2\",class=\"gold\"} 1"));
  EXPECT_TRUE(has_line(text, "nvqos_class_guaranteed_bits_per_second{class=\"gold\"} 200000000"));
  EXPECT_TRUE(has_line(text, "nvqos_class_ceiling_bits_per_second{class=\"gold\",op=\"any\"} 800000000"));
  EXPECT_EQ(text.find("nvqos_class_ceiling_bits_per_second{class=\"gold\",op=\"read\"}"), std::string::npos);
  EXPECT_TRUE(has_line(text, "nvqos_class_ceiling_iops{class=\"gold\",op=\"write\"} 5000"));
  EXPECT_TRUE(has_line(text, "nvqos_class_bytes_total{interface=\"eth0\",class=\"gold\",direction=\"egress\"} 5000"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_throttled_total{interface=\"eth0\",tenant=\"gold\"} 42"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_burst_balance_bytes{interface=\"eth0\",tenant=\"gold\"} -1500"));
  EXPECT_TRUE(has_line(text, "nvqos_tenant_burst_balance_ios{interface=\"eth0\",tenant=\"gold\"} 7"));
  EXPECT_EQ(text.find("nvqos_tenant_burst_balance_ios{interface=\"eth0\",tenant=\"bronze\"}"), std::string::npos);
}

}  // namespace
}  // namespace nvqos::agent
