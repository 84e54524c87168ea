// Temporary class overrides: an operator moves a tenant into another class
// for a while (PUT /v1/tenants/<name>/class, `nvqosctl set-class`), e.g. to
// demote a noisy tenant to bronze during an incident. The configured policy
// stays as the file says; the agent applies `apply_to(policy)`, so an override
// goes through the same difference-applying path as a reload. Pure values,
// unit-tested without a kernel (tests/agent/class_override_test.cpp).
//
// Lifetime: an override ends when its TTL passes (the tenant returns to its
// configured class), when it is cleared, or when a reload removes its tenant
// or its class. A reload that keeps both keeps the override, with its
// original expiry. Overrides live in the running agent: a restarted agent
// starts with the configured classes.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "result.hpp"

namespace nvqos::agent {

// Longest TTL an override may ask for; longer-lived changes belong in the config.
inline constexpr std::chrono::seconds kMaxClassOverrideTtl{7 * 24 * 3600};

struct ClassOverride {
  std::string tenant;
  std::string class_name;        // the class the tenant is in while the override lasts
  std::string configured_class;  // the class the policy gives it ("" none), refreshed on reload
  std::chrono::system_clock::time_point set_at{};
  // Both set, or neither (no TTL: until cleared): the wall-clock time for
  // people, the monotonic deadline for the timer.
  std::optional<std::chrono::system_clock::time_point> expires_at;
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

class ClassOverrides {
 public:
  // Why `tenant` cannot be moved to `class_name` for `ttl` under `policy`;
  // ENOENT for an unknown tenant, EINVAL for an unknown class or a TTL out of
  // range.
  // Whether `policy` has the tenant ("default": when the default tenant is on).
  static bool has_tenant(const Policy& policy, const std::string& tenant);
  static Status check(const Policy& policy, const std::string& tenant, const std::string& class_name,
                      std::optional<std::chrono::seconds> ttl);

  // An override from now on (replaces the tenant's previous one). Call
  // check() first.
  static ClassOverride make(const Policy& policy, const std::string& tenant, const std::string& class_name,
                            std::optional<std::chrono::seconds> ttl, std::chrono::system_clock::time_point wall_now,
                            std::chrono::steady_clock::time_point now);

  void set(ClassOverride o);
  // The tenant's override, removed; nullopt when it had none.
  std::optional<ClassOverride> clear(const std::string& tenant);
  // Overrides whose deadline is at or before `now`, removed.
  std::vector<ClassOverride> take_expired(std::chrono::steady_clock::time_point now);
  // Removes the overrides `policy` can no longer honour (tenant or class gone)
  // and refreshes configured_class of the others; returns the removed with why.
  std::vector<std::pair<ClassOverride, std::string>> prune(const Policy& policy);
  std::optional<std::chrono::steady_clock::time_point> next_deadline() const;

  const ClassOverride* find(const std::string& tenant) const;
  const std::map<std::string, ClassOverride>& all() const { return by_tenant_; }
  bool empty() const { return by_tenant_.empty(); }

  // `policy` with every override in force: the policy the data path runs.
  Policy apply_to(const Policy& policy) const;
  // "t1 -> bronze, t2 -> gold", for errors and logs.
  std::string describe() const;

 private:
  std::map<std::string, ClassOverride> by_tenant_;
};

}  // namespace nvqos::agent
