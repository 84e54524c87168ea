#include <gtest/gtest.h>

#include "config.hpp"
#include "config_refusal.hpp"

namespace nvqos::agent {
namespace {

Policy parse(const std::string& text) { return parse_policy(text); }

TEST(Config, EmptyObjectIsTheObserveOnlyDefault) {
  Policy p = parse("{}");
  EXPECT_EQ(p.io_ports, std::vector<std::uint16_t>{4420});
  EXPECT_EQ(p.discovery_ports, std::vector<std::uint16_t>{8009});
  EXPECT_TRUE(p.default_tenant_enabled);
  EXPECT_TRUE(p.tenants.empty());
  Policy d = default_policy();
  EXPECT_EQ(d.io_ports, p.io_ports);
  EXPECT_EQ(d.default_tenant_enabled, p.default_tenant_enabled);
}

TEST(Config, FullConfigParses) {
  Policy p = parse(R"({
    "version": 1,
    "nvme_ports": {"io": [4420, 4421], "discovery": [8009]},
    "default_tenant": {"enabled": false},
    "tenants": [
      {"name": "gold", "match": [{"remote": "10.0.0.0/24"}, {"remote": "fd00::5", "port": 4421}]},
      {"name": "bronze", "quarantine": true, "slow_command_threshold_us": 2500, "match": [{"port": 4420}]}
    ],
    "limits": {"max_flows": 4096}
  })");
  ASSERT_EQ(p.tenants.size(), 2u);
  EXPECT_EQ(p.io_ports, (std::vector<std::uint16_t>{4420, 4421}));
  EXPECT_FALSE(p.default_tenant_enabled);
  EXPECT_EQ(p.max_flows, 4096u);
  const auto& gold = p.tenants[0];
  ASSERT_EQ(gold.match.size(), 2u);
  EXPECT_EQ(gold.match[0].remote->text, "10.0.0.0/24");
  EXPECT_EQ(gold.match[0].remote->length, 96u + 24);
  EXPECT_EQ(gold.match[0].port, 0);
  EXPECT_EQ(gold.match[1].remote->text, "fd00::5/128");
  EXPECT_EQ(gold.match[1].port, 4421);
  EXPECT_TRUE(p.tenants[1].quarantine);
  EXPECT_EQ(p.tenants[1].slow_command_ns, 2'500'000u);
  EXPECT_EQ(p.tenants[0].slow_command_ns, 0u);
  EXPECT_FALSE(p.tenants[1].match[0].remote.has_value());
}

TEST(Config, PrefixesAreCanonicalAndV4Mapped) {
  auto p = parse_prefix("10.1.2.3/16");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->ipv4);
  EXPECT_EQ(p->text, "10.1.0.0/16");
  EXPECT_EQ(p->length, 112u);
  std::array<std::uint8_t, 16> want{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 0, 0};
  EXPECT_EQ(p->addr, want);
  auto v6 = parse_prefix("2001:db8::1/32");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->text, "2001:db8::/32");
  EXPECT_FALSE(parse_prefix("10.0.0.0/33"));
  EXPECT_FALSE(parse_prefix("fd00::/129"));
  EXPECT_FALSE(parse_prefix("10.0.0/8"));
  EXPECT_FALSE(parse_prefix("10.0.0.0/"));
  EXPECT_FALSE(parse_prefix("10.0.0.0/x"));
  EXPECT_FALSE(parse_prefix("host.example"));
}

struct Refusal {
  const char* description;
  const char* config;
  const char* pointer;
  const char* reason;
};

class ConfigRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(ConfigRefusal, NamesTheFieldAndTheReason) {
  const auto& r = GetParam();
  expect_refused(r.config, r.pointer, r.reason);
}

const Refusal kRefusals[] = {
    {"syntax error", "{\"tenants\": [}", "", "not valid JSON at line 1"},
    {"syntax error on a later line", "{\n\"version\": 1,\n oops}", "", "line 3"},
    {"number beyond a double (nvqos_config_fuzz)", R"({"nvme_ports": {"io": [441e309]}})", "", "number overflow"},
    {"not an object", "[]", "", "must be an object"},
    {"unknown top-level field", R"({"tenant": []})", "/tenant", "unknown field"},
    {"future version", R"({"version": 2})", "/version", "unsupported config version 2"},
    {"version not a number", R"({"version": "1"})", "/version", "whole number"},
    {"port zero", R"({"nvme_ports": {"io": [0]}})", "/nvme_ports/io/0", "out of range"},
    {"port too large", R"({"nvme_ports": {"io": [70000]}})", "/nvme_ports/io/0", "out of range"},
    {"negative port", R"({"nvme_ports": {"io": [-1]}})", "/nvme_ports/io/0", "whole number"},
    {"duplicate port", R"({"nvme_ports": {"io": [4420, 4420]}})", "/nvme_ports/io/1", "listed twice"},
    {"port in both lists", R"({"nvme_ports": {"io": [4420], "discovery": [4420]}})", "/nvme_ports/discovery",
     "also listed"},
    {"no ports at all", R"({"nvme_ports": {"io": [], "discovery": []}})", "/nvme_ports", "no NVMe/TCP ports"},
    {"tenants not a list", R"({"tenants": {}})", "/tenants", "must be a list"},
    {"tenant without name", R"({"tenants": [{"match": [{"port": 4420}]}]})", "/tenants/0/name", "required"},
    {"bad tenant name", R"({"tenants": [{"name": "a b", "match": [{"port": 4420}]}]})", "/tenants/0/name",
     "not a valid tenant name"},
    {"reserved tenant name", R"({"tenants": [{"name": "default", "match": [{"port": 4420}]}]})", "/tenants/0/name",
     "built-in"},
    {"duplicate tenant", R"({"tenants": [{"name": "a", "match": [{"port": 4420}]}, {"name": "a", "match": [{"remote": "10.0.0.1"}]}]})",
     "/tenants/1/name", "already defined at /tenants/0"},
    {"no match list", R"({"tenants": [{"name": "a"}]})", "/tenants/0/match", "non-empty list"},
    {"empty match rule", R"({"tenants": [{"name": "a", "match": [{}]}]})", "/tenants/0/match/0", "needs"},
    {"bad prefix", R"({"tenants": [{"name": "a", "match": [{"remote": "10.0.0.300/24"}]}]})",
     "/tenants/0/match/0/remote", "not an IPv4 or IPv6"},
    {"prefix too long", R"({"tenants": [{"name": "a", "match": [{"remote": "10.0.0.0/40"}]}]})",
     "/tenants/0/match/0/remote", "exceeds 32"},
    {"unknown match field", R"({"tenants": [{"name": "a", "match": [{"cidr": "10.0.0.0/8"}]}]})",
     "/tenants/0/match/0/cidr", "unknown field"},
    {"rule port not NVMe", R"({"tenants": [{"name": "a", "match": [{"remote": "10.0.0.1", "port": 22}]}]})",
     "/tenants/0/match/0/port", "not an NVMe/TCP port"},
    {"same rule in two tenants",
     R"({"tenants": [{"name": "a", "match": [{"remote": "10.0.0.0/24"}]}, {"name": "b", "match": [{"remote": "10.0.0.9/24"}]}]})",
     "/tenants/1/match/0", "already belongs to tenant \"a\""},
    {"quarantine not bool", R"({"tenants": [{"name": "a", "quarantine": 1, "match": [{"port": 4420}]}]})",
     "/tenants/0/quarantine", "true or false"},
    {"slow threshold zero", R"({"tenants": [{"name": "a", "slow_command_threshold_us": 0, "match": [{"port": 4420}]}]})",
     "/tenants/0/slow_command_threshold_us", "out of range"},
    {"slow threshold as string", R"({"default_tenant": {"slow_command_threshold_us": "5ms"}})",
     "/default_tenant/slow_command_threshold_us", "whole number"},
    {"max_flows too small", R"({"limits": {"max_flows": 10}})", "/limits/max_flows", "out of range"},
    {"default tenant typo", R"({"default_tenant": {"enable": true}})", "/default_tenant/enable", "unknown field"},
};

INSTANTIATE_TEST_SUITE_P(Invalid, ConfigRefusal, ::testing::ValuesIn(kRefusals),
                         [](const auto& info) {
                           std::string name = info.param.description;
                           for (auto& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

TEST(Config, SamePrefixWithDifferentPortsIsAllowed) {
  Policy p = parse(R"({"nvme_ports": {"io": [4420, 4421]},
    "tenants": [{"name": "a", "match": [{"remote": "10.0.0.0/24", "port": 4420}]},
                {"name": "b", "match": [{"remote": "10.0.0.0/24", "port": 4421}]}]})");
  EXPECT_EQ(p.tenants.size(), 2u);
}

TEST(Config, MissingFileNamesThePath) {
  try {
    load_policy_file("/nonexistent/nvqos.json");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/nvqos.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace nvqos::agent
