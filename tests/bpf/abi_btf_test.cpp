// ABI drift check: every struct of include/nvqos/abi.h must have the same size
// and member offsets in the compiled BPF object (its BTF) as in C++.
#include <bpf/btf.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nvqos/abi.h"
#include "nvqos_datapath.skel.h"

namespace {

struct Member {
  const char *name;
  std::size_t offset;
};

struct AbiStruct {
  const char *name;
  std::size_t size;
  std::vector<Member> members;
};

#define NVQOS_MEMBER(type, member) Member{#member, offsetof(type, member)}

const std::vector<AbiStruct> &abi_structs() {
  static const std::vector<AbiStruct> structs = {
      {"nvqos_tenant_rule_key", sizeof(nvqos_tenant_rule_key),
       {NVQOS_MEMBER(nvqos_tenant_rule_key, prefixlen), NVQOS_MEMBER(nvqos_tenant_rule_key, port),
        NVQOS_MEMBER(nvqos_tenant_rule_key, addr), NVQOS_MEMBER(nvqos_tenant_rule_key, pad)}},
      {"nvqos_tenant_rule_value", sizeof(nvqos_tenant_rule_value),
       {NVQOS_MEMBER(nvqos_tenant_rule_value, tenant_id)}},
      {"nvqos_tenant_config", sizeof(nvqos_tenant_config),
       {NVQOS_MEMBER(nvqos_tenant_config, flags), NVQOS_MEMBER(nvqos_tenant_config, limiter_id),
        NVQOS_MEMBER(nvqos_tenant_config, slow_cmd_ns), NVQOS_MEMBER(nvqos_tenant_config, classid),
        NVQOS_MEMBER(nvqos_tenant_config, dscp), NVQOS_MEMBER(nvqos_tenant_config, pad)}},
      {"nvqos_port_value", sizeof(nvqos_port_value), {NVQOS_MEMBER(nvqos_port_value, kind)}},
      {"nvqos_port_bitmap", sizeof(nvqos_port_bitmap), {NVQOS_MEMBER(nvqos_port_bitmap, bits)}},
      {"nvqos_flow_key", sizeof(nvqos_flow_key),
       {NVQOS_MEMBER(nvqos_flow_key, local_addr), NVQOS_MEMBER(nvqos_flow_key, remote_addr),
        NVQOS_MEMBER(nvqos_flow_key, local_port), NVQOS_MEMBER(nvqos_flow_key, remote_port),
        NVQOS_MEMBER(nvqos_flow_key, ifindex)}},
      {"nvqos_flow_value", sizeof(nvqos_flow_value),
       {NVQOS_MEMBER(nvqos_flow_value, tenant_id), NVQOS_MEMBER(nvqos_flow_value, role),
        NVQOS_MEMBER(nvqos_flow_value, family), NVQOS_MEMBER(nvqos_flow_value, flags),
        NVQOS_MEMBER(nvqos_flow_value, first_seen_ns), NVQOS_MEMBER(nvqos_flow_value, last_seen_ns),
        NVQOS_MEMBER(nvqos_flow_value, bytes), NVQOS_MEMBER(nvqos_flow_value, packets)}},
      {"nvqos_tenant_stats", sizeof(nvqos_tenant_stats),
       {NVQOS_MEMBER(nvqos_tenant_stats, bytes), NVQOS_MEMBER(nvqos_tenant_stats, payload_bytes),
        NVQOS_MEMBER(nvqos_tenant_stats, packets), NVQOS_MEMBER(nvqos_tenant_stats, flows_opened),
        NVQOS_MEMBER(nvqos_tenant_stats, flows_closed),
        NVQOS_MEMBER(nvqos_tenant_stats, dropped_bytes),
        NVQOS_MEMBER(nvqos_tenant_stats, dropped_packets),
        NVQOS_MEMBER(nvqos_tenant_stats, throttled_packets),
        NVQOS_MEMBER(nvqos_tenant_stats, throttle_delay_ns),
        NVQOS_MEMBER(nvqos_tenant_stats, throttle_capped),
        NVQOS_MEMBER(nvqos_tenant_stats, ingress_limit_dropped_bytes),
        NVQOS_MEMBER(nvqos_tenant_stats, ingress_limit_dropped_packets)}},
      {"nvqos_rate", sizeof(nvqos_rate),
       {NVQOS_MEMBER(nvqos_rate, per_sec), NVQOS_MEMBER(nvqos_rate, burst)}},
      {"nvqos_limiter_config", sizeof(nvqos_limiter_config),
       {NVQOS_MEMBER(nvqos_limiter_config, limit)}},
      {"nvqos_limiter_state", sizeof(nvqos_limiter_state),
       {NVQOS_MEMBER(nvqos_limiter_state, next_ns),
        NVQOS_MEMBER(nvqos_limiter_state, departure_ns),
        NVQOS_MEMBER(nvqos_limiter_state, target_iops_next_ns)}},
      {"nvqos_datapath_stats", sizeof(nvqos_datapath_stats),
       {NVQOS_MEMBER(nvqos_datapath_stats, packets_seen),
        NVQOS_MEMBER(nvqos_datapath_stats, packets_nvme),
        NVQOS_MEMBER(nvqos_datapath_stats, parse_errors),
        NVQOS_MEMBER(nvqos_datapath_stats, flow_insert_failed),
        NVQOS_MEMBER(nvqos_datapath_stats, unclassified)}},
      {"nvqos_settings", sizeof(nvqos_settings),
       {NVQOS_MEMBER(nvqos_settings, flags), NVQOS_MEMBER(nvqos_settings, pad),
        NVQOS_MEMBER(nvqos_settings, fixed_now_ns)}},
      {"nvqos_cmd_key", sizeof(nvqos_cmd_key),
       {NVQOS_MEMBER(nvqos_cmd_key, tenant_id), NVQOS_MEMBER(nvqos_cmd_key, op),
        NVQOS_MEMBER(nvqos_cmd_key, role), NVQOS_MEMBER(nvqos_cmd_key, pad)}},
      {"nvqos_cmd_stats", sizeof(nvqos_cmd_stats),
       {NVQOS_MEMBER(nvqos_cmd_stats, submitted), NVQOS_MEMBER(nvqos_cmd_stats, completed),
        NVQOS_MEMBER(nvqos_cmd_stats, bytes), NVQOS_MEMBER(nvqos_cmd_stats, errors),
        NVQOS_MEMBER(nvqos_cmd_stats, aborted), NVQOS_MEMBER(nvqos_cmd_stats, lost)}},
      {"nvqos_cmd_hist", sizeof(nvqos_cmd_hist), {NVQOS_MEMBER(nvqos_cmd_hist, buckets)}},
      {"nvqos_inflight_key", sizeof(nvqos_inflight_key),
       {NVQOS_MEMBER(nvqos_inflight_key, flow), NVQOS_MEMBER(nvqos_inflight_key, cid),
        NVQOS_MEMBER(nvqos_inflight_key, pad)}},
      {"nvqos_inflight_value", sizeof(nvqos_inflight_value),
       {NVQOS_MEMBER(nvqos_inflight_value, submit_ns), NVQOS_MEMBER(nvqos_inflight_value, tenant_id),
        NVQOS_MEMBER(nvqos_inflight_value, bytes), NVQOS_MEMBER(nvqos_inflight_value, op),
        NVQOS_MEMBER(nvqos_inflight_value, role), NVQOS_MEMBER(nvqos_inflight_value, opcode),
        NVQOS_MEMBER(nvqos_inflight_value, pad)}},
      {"nvqos_slow_cmd_event", sizeof(nvqos_slow_cmd_event),
       {NVQOS_MEMBER(nvqos_slow_cmd_event, flow), NVQOS_MEMBER(nvqos_slow_cmd_event, latency_ns),
        NVQOS_MEMBER(nvqos_slow_cmd_event, tenant_id), NVQOS_MEMBER(nvqos_slow_cmd_event, bytes),
        NVQOS_MEMBER(nvqos_slow_cmd_event, cid), NVQOS_MEMBER(nvqos_slow_cmd_event, status),
        NVQOS_MEMBER(nvqos_slow_cmd_event, op), NVQOS_MEMBER(nvqos_slow_cmd_event, role),
        NVQOS_MEMBER(nvqos_slow_cmd_event, opcode), NVQOS_MEMBER(nvqos_slow_cmd_event, pad)}},
      {"nvqos_nvme_stats", sizeof(nvqos_nvme_stats),
       {NVQOS_MEMBER(nvqos_nvme_stats, pdus), NVQOS_MEMBER(nvqos_nvme_stats, desync),
        NVQOS_MEMBER(nvqos_nvme_stats, resync), NVQOS_MEMBER(nvqos_nvme_stats, unmatched_resp),
        NVQOS_MEMBER(nvqos_nvme_stats, inflight_insert_failed),
        NVQOS_MEMBER(nvqos_nvme_stats, tls_flows), NVQOS_MEMBER(nvqos_nvme_stats, slow_cmd_events),
        NVQOS_MEMBER(nvqos_nvme_stats, slow_cmd_dropped),
        NVQOS_MEMBER(nvqos_nvme_stats, cid_reused)}},
      // NVMe identity and access control (bpf/lib/connect.h).
      {"nvqos_nqn", sizeof(nvqos_nqn), {NVQOS_MEMBER(nvqos_nqn, name)}},
      {"nvqos_nqn_pair", sizeof(nvqos_nqn_pair),
       {NVQOS_MEMBER(nvqos_nqn_pair, host), NVQOS_MEMBER(nvqos_nqn_pair, sub)}},
      {"nvqos_nqn_tenant", sizeof(nvqos_nqn_tenant), {NVQOS_MEMBER(nvqos_nqn_tenant, tenant_id)}},
      {"nvqos_access_subsys_key", sizeof(nvqos_access_subsys_key),
       {NVQOS_MEMBER(nvqos_access_subsys_key, sub), NVQOS_MEMBER(nvqos_access_subsys_key, port),
        NVQOS_MEMBER(nvqos_access_subsys_key, pad)}},
      {"nvqos_access_subsys", sizeof(nvqos_access_subsys),
       {NVQOS_MEMBER(nvqos_access_subsys, subsys_id), NVQOS_MEMBER(nvqos_access_subsys, flags)}},
      {"nvqos_access_host_key", sizeof(nvqos_access_host_key),
       {NVQOS_MEMBER(nvqos_access_host_key, subsys_id), NVQOS_MEMBER(nvqos_access_host_key, host)}},
      {"nvqos_access_cidr_key", sizeof(nvqos_access_cidr_key),
       {NVQOS_MEMBER(nvqos_access_cidr_key, prefixlen), NVQOS_MEMBER(nvqos_access_cidr_key, subsys_id),
        NVQOS_MEMBER(nvqos_access_cidr_key, addr)}},
      {"nvqos_access_port", sizeof(nvqos_access_port), {NVQOS_MEMBER(nvqos_access_port, flags)}},
      {"nvqos_access_conn", sizeof(nvqos_access_conn),
       {NVQOS_MEMBER(nvqos_access_conn, since_ns), NVQOS_MEMBER(nvqos_access_conn, state),
        NVQOS_MEMBER(nvqos_access_conn, subsys_id), NVQOS_MEMBER(nvqos_access_conn, flags),
        NVQOS_MEMBER(nvqos_access_conn, pad)}},
      {"nvqos_access_stats", sizeof(nvqos_access_stats),
       {NVQOS_MEMBER(nvqos_access_stats, allowed), NVQOS_MEMBER(nvqos_access_stats, denied),
        NVQOS_MEMBER(nvqos_access_stats, dry_run_denied), NVQOS_MEMBER(nvqos_access_stats, dropped_packets),
        NVQOS_MEMBER(nvqos_access_stats, dropped_bytes), NVQOS_MEMBER(nvqos_access_stats, resets)}},
      {"nvqos_access_drops", sizeof(nvqos_access_drops),
       {NVQOS_MEMBER(nvqos_access_drops, packets), NVQOS_MEMBER(nvqos_access_drops, bytes)}},
      {"nvqos_connect_event", sizeof(nvqos_connect_event),
       {NVQOS_MEMBER(nvqos_connect_event, flow), NVQOS_MEMBER(nvqos_connect_event, tenant_id),
        NVQOS_MEMBER(nvqos_connect_event, qid), NVQOS_MEMBER(nvqos_connect_event, cntlid),
        NVQOS_MEMBER(nvqos_connect_event, role), NVQOS_MEMBER(nvqos_connect_event, verdict),
        NVQOS_MEMBER(nvqos_connect_event, flags), NVQOS_MEMBER(nvqos_connect_event, pad),
        NVQOS_MEMBER(nvqos_connect_event, subsys_id), NVQOS_MEMBER(nvqos_connect_event, hostnqn),
        NVQOS_MEMBER(nvqos_connect_event, subnqn), NVQOS_MEMBER(nvqos_connect_event, port),
        NVQOS_MEMBER(nvqos_connect_event, pad2)}},
      {"nvqos_connect_stats", sizeof(nvqos_connect_stats),
       {NVQOS_MEMBER(nvqos_connect_stats, connects), NVQOS_MEMBER(nvqos_connect_stats, unparsed),
        NVQOS_MEMBER(nvqos_connect_stats, events_sent), NVQOS_MEMBER(nvqos_connect_stats, events_dropped),
        NVQOS_MEMBER(nvqos_connect_stats, tenant_set), NVQOS_MEMBER(nvqos_connect_stats, gate_refused),
        NVQOS_MEMBER(nvqos_connect_stats, conns_full)}},
  };
  return structs;
}

struct SkelDeleter {
  void operator()(nvqos_datapath *skel) const { nvqos_datapath__destroy(skel); }
};

class AbiBtfTest : public ::testing::TestWithParam<AbiStruct> {
 protected:
  void SetUp() override {
    // Opening parses the embedded object and its BTF; nothing is loaded, no root needed.
    skel_.reset(nvqos_datapath__open());
    ASSERT_TRUE(skel_) << "open nvqos_datapath: " << std::strerror(errno);
    btf_ = bpf_object__btf(skel_->obj);
    ASSERT_TRUE(btf_) << "nvqos_datapath.bpf.o carries no BTF";
  }

  std::unique_ptr<nvqos_datapath, SkelDeleter> skel_;
  const btf *btf_ = nullptr;
};

TEST_P(AbiBtfTest, SizeAndOffsetsMatchCpp) {
  const AbiStruct &want = GetParam();
  const __s32 id = btf__find_by_name_kind(btf_, want.name, BTF_KIND_STRUCT);
  ASSERT_GT(id, 0) << "struct " << want.name << " is not in the object's BTF";
  EXPECT_EQ(btf__resolve_size(btf_, id), static_cast<__s64>(want.size)) << want.name;

  const btf_type *type = btf__type_by_id(btf_, id);
  ASSERT_EQ(btf_vlen(type), want.members.size()) << want.name << ": member count differs";
  const btf_member *members = btf_members(type);
  for (std::size_t i = 0; i < want.members.size(); ++i) {
    EXPECT_STREQ(btf__name_by_offset(btf_, members[i].name_off), want.members[i].name)
        << want.name << " member " << i;
    EXPECT_EQ(btf_member_bit_offset(type, i), want.members[i].offset * 8)
        << want.name << "." << want.members[i].name;
  }
}

INSTANTIATE_TEST_SUITE_P(Abi, AbiBtfTest, ::testing::ValuesIn(abi_structs()),
                         [](const auto &info) { return std::string(info.param.name); });

}  // namespace
