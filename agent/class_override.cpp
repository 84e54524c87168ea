#include "class_override.hpp"

#include <algorithm>
#include <cerrno>

namespace nvqos::agent {
bool ClassOverrides::has_tenant(const Policy& policy, const std::string& tenant) {
  if (tenant == kDefaultTenantName) return policy.default_tenant_enabled;
  return std::any_of(policy.tenants.begin(), policy.tenants.end(), [&](const auto& t) { return t.name == tenant; });
}

Status ClassOverrides::check(const Policy& policy, const std::string& tenant, const std::string& class_name,
                             std::optional<std::chrono::seconds> ttl) {
  if (!has_tenant(policy, tenant))
    return Error{ENOENT, "unknown tenant \"" + tenant + "\"" +
                             (tenant == kDefaultTenantName ? " (the default tenant is disabled in the config)"
                                                           : " (not in the config's /tenants)")};
  if (!policy.find_class(class_name)) {
    std::string known;
    for (const auto& c : policy.classes) known += (known.empty() ? "" : ", ") + c.name;
    return Error{EINVAL, "unknown class \"" + class_name + "\" (configured classes: " +
                             (known.empty() ? "none" : known) + ")"};
  }
  if (ttl && (*ttl <= std::chrono::seconds(0) || *ttl > kMaxClassOverrideTtl))
    return Error{EINVAL, "ttl_s " + std::to_string(ttl->count()) + " out of range: 1 to " +
                             std::to_string(kMaxClassOverrideTtl.count()) + " seconds (7 days)"};
  return ok_status();
}

ClassOverride ClassOverrides::make(const Policy& policy, const std::string& tenant, const std::string& class_name,
                                   std::optional<std::chrono::seconds> ttl,
                                   std::chrono::system_clock::time_point wall_now,
                                   std::chrono::steady_clock::time_point now) {
  ClassOverride o;
  o.tenant = tenant;
  o.class_name = class_name;
  o.configured_class = policy.class_of(tenant);
  o.set_at = wall_now;
  if (ttl) {
    o.expires_at = wall_now + *ttl;
    o.deadline = now + *ttl;
  }
  return o;
}

void ClassOverrides::set(ClassOverride o) {
  std::string tenant = o.tenant;
  by_tenant_[tenant] = std::move(o);
}

std::optional<ClassOverride> ClassOverrides::clear(const std::string& tenant) {
  auto it = by_tenant_.find(tenant);
  if (it == by_tenant_.end()) return std::nullopt;
  ClassOverride o = std::move(it->second);
  by_tenant_.erase(it);
  return o;
}

std::vector<ClassOverride> ClassOverrides::take_expired(std::chrono::steady_clock::time_point now) {
  std::vector<ClassOverride> out;
  for (auto it = by_tenant_.begin(); it != by_tenant_.end();) {
    if (it->second.deadline && *it->second.deadline <= now) {
      out.push_back(std::move(it->second));
      it = by_tenant_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<std::pair<ClassOverride, std::string>> ClassOverrides::prune(const Policy& policy) {
  std::vector<std::pair<ClassOverride, std::string>> out;
  for (auto it = by_tenant_.begin(); it != by_tenant_.end();) {
    std::string why;
    if (!has_tenant(policy, it->first)) why = "the tenant is no longer in the config";
    else if (!policy.find_class(it->second.class_name)) why = "the class is no longer in the config";
    if (why.empty()) {
      it->second.configured_class = policy.class_of(it->first);
      ++it;
      continue;
    }
    out.emplace_back(std::move(it->second), why);
    it = by_tenant_.erase(it);
  }
  return out;
}

std::optional<std::chrono::steady_clock::time_point> ClassOverrides::next_deadline() const {
  std::optional<std::chrono::steady_clock::time_point> next;
  for (const auto& [tenant, o] : by_tenant_)
    if (o.deadline && (!next || *o.deadline < *next)) next = o.deadline;
  return next;
}

const ClassOverride* ClassOverrides::find(const std::string& tenant) const {
  auto it = by_tenant_.find(tenant);
  return it == by_tenant_.end() ? nullptr : &it->second;
}

Policy ClassOverrides::apply_to(const Policy& policy) const {
  Policy out = policy;
  for (auto& t : out.tenants)
    if (const auto* o = find(t.name)) t.class_name = o->class_name;
  if (const auto* o = find(std::string(kDefaultTenantName))) out.default_tenant_class = o->class_name;
  return out;
}

std::string ClassOverrides::describe() const {
  std::string out;
  for (const auto& [tenant, o] : by_tenant_) out += (out.empty() ? "" : ", ") + tenant + " -> " + o.class_name;
  return out;
}

}  // namespace nvqos::agent
