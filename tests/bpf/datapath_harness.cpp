#include "datapath_harness.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

namespace nvqos::testing {
namespace {

[[noreturn]] void fail(int err, const std::string &what) {
  throw std::system_error(err < 0 ? -err : err, std::generic_category(), what);
}

void update(const bpf_map *map, const void *key, const void *value) {
  if (bpf_map__update_elem(map, key, bpf_map__key_size(map), value, bpf_map__value_size(map),
                           BPF_ANY) != 0)
    fail(errno, std::string("update map ") + bpf_map__name(map));
}


// Room for what a program may add to the frame.
constexpr std::size_t kDataOutSlack = 256;

RunResult run(const bpf_program *prog, bpf_test_run_opts &opts, Bytes &data_out) {
  data_out.resize(opts.data_size_in + kDataOutSlack);
  opts.data_out = data_out.data();
  opts.data_size_out = static_cast<__u32>(data_out.size());
  const int err = bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
  if (err != 0) fail(errno, std::string("test run of ") + bpf_program__name(prog));
  data_out.resize(opts.data_size_out);
  RunResult r;
  r.retval = opts.retval;
  r.duration_ns = opts.duration;
  return r;
}

}  // namespace

std::string bpf_unavailable_reason() {
  if (geteuid() != 0) return "BPF program tests need root (CAP_BPF, CAP_NET_ADMIN)";
  if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SCHED_CLS, nullptr) != 1)
    return "the kernel cannot load tc (sched_cls) BPF programs";
  if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, nullptr) != 1)
    return "the kernel cannot load XDP programs";
  return "";
}

RunResult run_tc(const bpf_program *prog, const Bytes &frame, const SkbContext &ctx,
                 std::uint32_t repeat) {
  __sk_buff skb{};
  skb.ifindex = ctx.ifindex;
  skb.gso_segs = ctx.gso_segs;
  skb.gso_size = ctx.gso_size;
  skb.tstamp = ctx.tstamp;
  skb.priority = ctx.priority;
  __sk_buff out{};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<__u32>(frame.size()), .ctx_in = &skb, .ctx_out = &out,
              .ctx_size_in = sizeof(skb), .ctx_size_out = sizeof(out),
              .repeat = static_cast<int>(repeat));
  Bytes data;
  RunResult r = run(prog, opts, data);
  r.tstamp = out.tstamp;
  r.priority = out.priority;
  r.data = std::move(data);
  return r;
}

RunResult run_xdp(const bpf_program *prog, const Bytes &frame, std::uint32_t repeat) {
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<__u32>(frame.size()), .repeat = static_cast<int>(repeat));
  Bytes data;
  RunResult r = run(prog, opts, data);
  r.data = std::move(data);
  return r;
}

Datapath::Datapath() {
  skel_ = nvqos_datapath__open_and_load();
  if (!skel_) fail(errno, "open and load nvqos_datapath");
}

Datapath::Datapath(const MapSizes &sizes) {
  skel_ = nvqos_datapath__open();
  if (!skel_) fail(errno, "open nvqos_datapath");
  const std::pair<bpf_map *, std::uint32_t> resize[] = {{skel_->maps.flow_table, sizes.flows},
                                                        {skel_->maps.nvme_conns, sizes.conns},
                                                        {skel_->maps.inflight_cmds, sizes.inflight},
                                                        {skel_->maps.access_conns, sizes.access}};
  for (const auto &[map, entries] : resize) {
    if (entries == 0) continue;
    if (const int err = bpf_map__set_max_entries(map, entries); err != 0) {
      nvqos_datapath__destroy(skel_);
      fail(err, std::string("resize map ") + bpf_map__name(map));
    }
  }
  if (const int err = nvqos_datapath__load(skel_); err != 0) {
    nvqos_datapath__destroy(skel_);
    fail(err, "load nvqos_datapath");
  }
}

Datapath::~Datapath() { nvqos_datapath__destroy(skel_); }

void Datapath::add_nvme_port(std::uint16_t port, std::uint32_t kind) {
  nvqos_port_value value{kind};
  update(skel_->maps.nvme_ports, &port, &value);
}

void Datapath::add_rule(std::uint16_t port, std::string_view prefix, unsigned prefix_len,
                        std::uint32_t tenant_id) {
  nvqos_tenant_rule_key key{};
  const Addr16 addr = parse_addr(prefix);
  key.prefixlen = NVQOS_RULE_PORT_BITS + (is_v4_mapped(addr) ? 96 : 0) + prefix_len;
  key.port = htons(port);
  std::memcpy(key.addr, addr.data(), sizeof(key.addr));
  nvqos_tenant_rule_value value{tenant_id};
  update(skel_->maps.tenant_rules, &key, &value);
}

void Datapath::set_port_bitmap(const std::vector<std::uint16_t> &ports) {
  const std::uint32_t zero = 0;
  auto bitmap = std::make_unique<nvqos_port_bitmap>();
  for (std::uint16_t port : ports) bitmap->bits[port / 64] |= 1ull << (port % 64);
  update(skel_->maps.nvme_port_bitmap, &zero, bitmap.get());
}

void Datapath::set_settings(std::uint32_t flags) {
  const std::uint32_t zero = 0;
  nvqos_settings value{};
  value.flags = flags;
  update(skel_->maps.settings, &zero, &value);
}

void Datapath::set_tenant_flags(std::uint32_t tenant_id, std::uint32_t flags) {
  nvqos_tenant_config value{};
  value.flags = flags;
  value.limiter_id = NVQOS_LIMITER_NONE;
  update(skel_->maps.tenant_config, &tenant_id, &value);
}

void Datapath::set_tenant_slow_cmd_ns(std::uint32_t tenant_id, std::uint64_t slow_cmd_ns) {
  nvqos_tenant_config value{};
  value.flags = NVQOS_TENANT_F_ACTIVE;
  value.limiter_id = NVQOS_LIMITER_NONE;
  value.slow_cmd_ns = slow_cmd_ns;
  update(skel_->maps.tenant_config, &tenant_id, &value);
}

void Datapath::set_tenant_config(std::uint32_t tenant_id, const nvqos_tenant_config &config) {
  update(skel_->maps.tenant_config, &tenant_id, &config);
}

void Datapath::set_limiter(std::uint32_t limiter_id, const nvqos_limiter_config &config) {
  update(skel_->maps.limiter_config, &limiter_id, &config);
}

nvqos_limiter_state Datapath::limiter_state(std::uint32_t limiter_id) const {
  nvqos_limiter_state state{};
  if (bpf_map__lookup_elem(skel_->maps.limiter_state, &limiter_id, sizeof(limiter_id), &state,
                           sizeof(state), 0) != 0)
    fail(errno, "lookup limiter_state");
  return state;
}

void Datapath::set_clock(std::uint64_t fixed_now_ns) {
  const std::uint32_t zero = 0;
  nvqos_settings value{};
  if (bpf_map__lookup_elem(skel_->maps.settings, &zero, sizeof(zero), &value, sizeof(value), 0) !=
      0)
    fail(errno, "lookup settings");
  value.fixed_now_ns = fixed_now_ns;
  update(skel_->maps.settings, &zero, &value);
}

nvqos_tenant_stats Datapath::tenant_stats(std::uint32_t tenant_id) const {
  return percpu_sum<nvqos_tenant_stats>(skel_->maps.tenant_stats, tenant_id);
}

nvqos_datapath_stats Datapath::datapath_stats() const {
  return percpu_sum<nvqos_datapath_stats>(skel_->maps.datapath_stats, 0);
}

std::optional<nvqos_flow_value> Datapath::flow(const nvqos_flow_key &key) const {
  nvqos_flow_value value{};
  if (bpf_map__lookup_elem(skel_->maps.flow_table, &key, sizeof(key), &value, sizeof(value), 0) !=
      0) {
    if (errno == ENOENT) return std::nullopt;
    fail(errno, "lookup flow_table");
  }
  return value;
}

std::vector<std::pair<nvqos_flow_key, nvqos_flow_value>> Datapath::flows() const {
  std::vector<std::pair<nvqos_flow_key, nvqos_flow_value>> out;
  nvqos_flow_key key{};
  nvqos_flow_key next{};
  const nvqos_flow_key *prev = nullptr;
  while (bpf_map__get_next_key(skel_->maps.flow_table, prev, &next, sizeof(next)) == 0) {
    key = next;
    prev = &key;
    if (auto value = flow(key)) out.emplace_back(key, *value);
  }
  return out;
}

nvqos_cmd_stats Datapath::cmd_stats(const nvqos_cmd_key &key) const {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) fail(cpus, "count possible CPUs");
  std::vector<nvqos_cmd_stats> values(cpus);
  nvqos_cmd_stats total{};
  if (bpf_map__lookup_elem(skel_->maps.cmd_stats, &key, sizeof(key), values.data(),
                           sizeof(nvqos_cmd_stats) * cpus, 0) != 0) {
    if (errno == ENOENT) return total;
    fail(errno, "lookup cmd_stats");
  }
  for (const nvqos_cmd_stats &v : values) {
    total.submitted += v.submitted;
    total.completed += v.completed;
    total.bytes += v.bytes;
    for (unsigned i = 0; i < NVQOS_STATUS_CLASS_MAX; ++i) total.errors[i] += v.errors[i];
    total.aborted += v.aborted;
    total.lost += v.lost;
  }
  return total;
}

nvqos_nvme_stats Datapath::nvme_stats() const {
  return percpu_sum<nvqos_nvme_stats>(skel_->maps.nvme_stats, 0);
}

std::vector<std::uint64_t> Datapath::cmd_latency(const nvqos_cmd_key &key) const {
  auto hist = std::make_unique<nvqos_cmd_hist>();
  if (bpf_map__lookup_elem(skel_->maps.cmd_latency, &key, sizeof(key), hist.get(), sizeof(*hist),
                           0) != 0) {
    if (errno == ENOENT) return {};
    fail(errno, "lookup cmd_latency");
  }
  return {std::begin(hist->buckets), std::end(hist->buckets)};
}

std::size_t Datapath::inflight_count() const {
  std::size_t count = 0;
  nvqos_inflight_key key{};
  nvqos_inflight_key next{};
  const nvqos_inflight_key *prev = nullptr;
  while (bpf_map__get_next_key(skel_->maps.inflight_cmds, prev, &next, sizeof(next)) == 0) {
    key = next;
    prev = &key;
    ++count;
  }
  return count;
}

std::vector<nvqos_slow_cmd_event> Datapath::drain_slow_cmd_events() {
  std::vector<nvqos_slow_cmd_event> events;
  auto on_event = [](void *ctx, void *data, std::size_t size) -> int {
    if (size >= sizeof(nvqos_slow_cmd_event)) {
      nvqos_slow_cmd_event e;
      std::memcpy(&e, data, sizeof(e));
      static_cast<std::vector<nvqos_slow_cmd_event> *>(ctx)->push_back(e);
    }
    return 0;
  };
  std::unique_ptr<ring_buffer, decltype(&ring_buffer__free)> rb(
      ring_buffer__new(bpf_map__fd(skel_->maps.slow_cmd_events), on_event, &events, nullptr),
      &ring_buffer__free);
  if (!rb) fail(errno, "open ring buffer slow_cmd_events");
  if (ring_buffer__consume(rb.get()) < 0) fail(errno, "consume slow_cmd_events");
  return events;
}

RunResult Datapath::ingress(const Bytes &frame, const SkbContext &ctx, std::uint32_t repeat) {
  return run_tc(skel_->progs.nvqos_tc_ingress, frame, ctx, repeat);
}

RunResult Datapath::egress(const Bytes &frame, const SkbContext &ctx, std::uint32_t repeat) {
  return run_tc(skel_->progs.nvqos_tc_egress, frame, ctx, repeat);
}

RunResult Datapath::xdp(const Bytes &frame, std::uint32_t repeat) {
  return run_xdp(skel_->progs.nvqos_xdp_ingress, frame, repeat);
}

nvqos_flow_key make_flow_key(std::string_view local, std::uint16_t local_port,
                             std::string_view remote, std::uint16_t remote_port,
                             std::uint32_t ifindex) {
  nvqos_flow_key key{};
  const Addr16 l = parse_addr(local);
  const Addr16 r = parse_addr(remote);
  std::memcpy(key.local_addr, l.data(), sizeof(key.local_addr));
  std::memcpy(key.remote_addr, r.data(), sizeof(key.remote_addr));
  key.local_port = htons(local_port);
  key.remote_port = htons(remote_port);
  key.ifindex = ifindex;
  return key;
}

std::unique_ptr<Datapath> observe_only_datapath(const MapSizes &sizes) {
  auto dp = std::make_unique<Datapath>(sizes);
  dp->add_nvme_port(NVQOS_PORT_NVME_IO);
  dp->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT);
  return dp;
}

std::size_t map_entries(const bpf_map *map) {
  std::vector<std::uint8_t> key(bpf_map__key_size(map)), next(key.size());
  std::size_t n = 0;
  const void *prev = nullptr;
  while (bpf_map__get_next_key(map, prev, next.data(), next.size()) == 0) {
    key = next;
    prev = key.data();
    if (++n > 2u * bpf_map__max_entries(map)) break;
  }
  return n;
}

}  // namespace nvqos::testing
