#include "slo_controller.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "commands.hpp"

namespace nvqos::agent {

namespace {

std::string quantile_label(double q) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "p%g", q * 100);
  return buf;
}

std::string micros(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0fus", seconds * 1e6);
  return buf;
}

// A ceiling at a zero floor still has something to grow from.
constexpr double kMinBase = 0.01;  // of the dimension's max

// Cut one dimension after a breach: from what the class actually sends (a
// ceiling far above its rate would otherwise take several cuts to bite),
// back to the last safe ceiling when that lies between the cut and the rate.
// `returning`: the first cut after the protected classes were idle goes to the
// safe ceiling from before, even below the multiplicative cut, since it is
// known to have worked and a milder cut may take several windows to bite.
void cut(SloController::Dimension& d, double rate, double factor, bool returning, const SloTuning& t) {
  const double basis = rate > 0 ? std::min(d.effective, rate) : d.effective;
  d.kept_at_safe = 0;
  // At a rate that kept the objective before, a first breach is more likely a
  // disturbance than the class's doing (on a shared host a stall of a few ms
  // spoils a window whatever the ceiling): cut, but keep what was learned
  // (lowering bad to a rate that was fine would make every later raise
  // creep, and forgetting it would make it overshoot the bottleneck again).
  // A disturbance lasting several windows is cut while it lasts, still
  // learning nothing; the return to safe then tells whether it was one.
  const bool first_at_safe = d.safe && !d.disturbed && basis <= *d.safe * (1 + t.resolution) && !returning;
  const bool still_below_safe = d.disturbed && d.safe && d.effective < *d.safe;
  if (first_at_safe || still_below_safe) {
    d.disturbed = true;
    d.increment = 0;
    d.effective = std::clamp(basis * factor, d.floor, d.max);
    return;
  }
  d.disturbed = false;
  // A failed probe (or the first cut after idle) confirms the bad rate known
  // before: bisecting towards the higher one would only fail again.
  d.bad = d.bad ? std::min(*d.bad, basis) : basis;
  d.increment = 0;
  if (d.safe && *d.safe >= basis) d.safe.reset();
  double target = basis * factor;
  if (d.safe && (*d.safe >= target || returning)) target = *d.safe;
  d.effective = std::clamp(target, d.floor, d.max);
}

// Raise one dimension after enough headroom. Every size is relative to the
// rates in play (the bad rate, the ceiling), not to the range up to the link:
// on a 10 Gbit/s link in front of a 1 Gbit/s bottleneck a step of the range
// would jump far past the bottleneck. Returns false when it holds at a plateau
// just below the known bad rate.
bool raise(SloController::Dimension& d, const SloTuning& t) {
  if (d.safe && *d.safe > d.effective) {
    // Back from a cut taken for a disturbance: the safe rate is proven.
    d.effective = std::min(d.max, *d.safe);
    return true;
  }
  d.safe = d.effective;
  if (d.bad && *d.bad <= d.effective) d.bad.reset();
  if (d.bad) {
    const double gap = *d.bad - d.effective;
    if (gap <= t.resolution * *d.bad) return false;
    d.effective = std::min(d.max, d.effective + gap / 2);
    return true;
  }
  // No bad rate in sight: start small, then double each raise in a row, so a
  // link that freed up is found in a few raises (four times the ceiling in six).
  if (d.effective >= d.max) return false;
  if (d.increment <= 0) d.increment = t.step * std::max(d.effective, kMinBase * d.max);
  d.effective = std::min(d.max, d.effective + d.increment);
  d.increment *= 2;
  return true;
}

// In the hysteresis band: the ceiling keeps the objective, but close to it, so
// the next raise without a bad rate starts small again.
void hold(SloController::Dimension& d) {
  if (!d.safe || *d.safe < d.effective) d.safe = d.effective;
  d.increment = 0;
}

// Called in every window that kept the objective (hold or headroom): enough of
// them at the safe rate end the suspicion of a disturbance.
void settle(SloController::Dimension& d, const SloTuning& t) {
  if (!d.disturbed || !d.safe || d.effective < *d.safe) return;
  if (++d.kept_at_safe >= t.settle_after) {
    d.disturbed = false;
    d.kept_at_safe = 0;
  }
}

// Past the remembered bad rate by one step: it may be stale (conditions
// changed while the ceiling held below it). A cut brings it back to safe,
// which raise() has just set to the plateau; the next raise forgets the bad
// rate if the probe kept the objective.
void probe(SloController::Dimension& d, const SloTuning& t) {
  if (!d.bad) return;
  d.effective = std::min(d.max, *d.bad * (1 + t.step));
  d.increment = 0;
}

// Idle growth keeps safe and bad: the ceiling that kept the objective before
// the protected class went quiet is the best first guess when it comes back
// (a cut returns straight there when it lies below the class's rate).
void grow(SloController::Dimension& d, const SloTuning& t) {
  d.increment = 0;
  d.effective = std::min(d.max, std::max(d.effective, kMinBase * d.max) * t.idle_growth);
}

}  // namespace

const char* to_string(SloVerdict v) {
  switch (v) {
    case SloVerdict::none: return "none";
    case SloVerdict::idle: return "idle";
    case SloVerdict::collecting: return "collecting";
    case SloVerdict::hold: return "hold";
    case SloVerdict::headroom: return "headroom";
    case SloVerdict::at_risk: return "at_risk";
  }
  return "unknown";
}

std::optional<double> SloController::ObjectiveState::compliance_ratio() const {
  if (recent.empty()) return std::nullopt;
  return static_cast<double>(std::count(recent.begin(), recent.end(), true)) / static_cast<double>(recent.size());
}

SloController::SloController(std::vector<SloClass> classes, SloTuning tuning) : tuning_(tuning) {
  const auto interval_ms = std::max<std::int64_t>(1, tuning_.interval.count());
  horizon_windows_ = static_cast<std::size_t>(
      std::max<std::int64_t>(1, std::chrono::milliseconds(tuning_.compliance_horizon).count() / interval_ms));
  for (const SloClass& spec : classes)
    for (const SloObjective& o : spec.objectives) {
      ObjectiveState s;
      s.class_name = spec.name;
      s.objective = o;
      s.pending = LogLinearHistogram(NVQOS_HIST_KERNEL_SUB_BITS, NVQOS_CMD_HIST_BUCKETS);
      objectives_.push_back(std::move(s));
    }
  for (const SloClass& spec : classes) {
    ClassState c;
    c.controlled = spec.enabled && std::any_of(classes.begin(), classes.end(), [&](const SloClass& p) {
                     return p.enabled && !p.objectives.empty() && p.priority < spec.priority;
                   });
    c.bps = Dimension{spec.floor_bps, spec.max_bps, spec.max_bps, {}, {}, 0};
    if (spec.max_iops > 0) c.iops = Dimension{spec.floor_iops, spec.max_iops, spec.max_iops, {}, {}, 0};
    c.probe_wait = tuning_.probe_after;
    c.spec = spec;
    classes_.push_back(std::move(c));
  }
}

const SloController::ClassState* SloController::find(const std::string& class_name) const {
  for (const auto& c : classes_)
    if (c.spec.name == class_name) return &c;
  return nullptr;
}

void SloController::judge_objectives(const SloObservation& obs) {
  for (ObjectiveState& o : objectives_) {
    auto it = obs.latency.find({o.class_name, o.objective.op});
    const bool got = it != obs.latency.end() && !it->second.empty();
    if (!got && o.pending.empty()) {
      ++o.idle_windows;
      o.verdict = SloVerdict::idle;
      continue;
    }
    o.idle_windows = 0;
    if (got) o.pending.merge(it->second);
    ++o.pending_windows;
    if (o.pending.count() < tuning_.min_samples && o.pending_windows < tuning_.max_merge) {
      o.verdict = SloVerdict::collecting;
      continue;
    }
    o.last_latency_seconds = static_cast<double>(o.pending.quantile(o.objective.quantile)) / 1e9;
    o.last_count = o.pending.count();
    o.pending.reset();
    o.pending_windows = 0;
    const double ratio = o.last_latency_seconds / o.objective.max_latency_seconds;
    const bool met = ratio <= 1.0;
    ++(met ? o.windows_met : o.windows_missed);
    o.recent.push_back(met);
    while (o.recent.size() > horizon_windows_) o.recent.pop_front();
    o.verdict = ratio >= tuning_.at_risk   ? SloVerdict::at_risk
                : ratio < tuning_.headroom ? SloVerdict::headroom
                                           : SloVerdict::hold;
  }
}

// Judged against the ceilings in force during the window, before this step adjusts them.
void SloController::note_exhaustion() {
  for (ObjectiveState& o : objectives_) {
    if (o.verdict == SloVerdict::idle) o.exhausted = false;
    if (o.verdict != SloVerdict::at_risk && o.verdict != SloVerdict::hold && o.verdict != SloVerdict::headroom)
      continue;  // not judged in this step
    const ClassState* owner = find(o.class_name);
    bool any = false, all_at_floor = true;
    for (const ClassState& c : classes_) {
      if (!c.controlled || !owner || !owner->spec.enabled || owner->spec.priority >= c.spec.priority) continue;
      any = true;
      all_at_floor = all_at_floor && c.bps.at_floor() && (!c.iops.adapted() || c.iops.at_floor());
    }
    o.exhausted = any && all_at_floor && o.last_latency_seconds > o.objective.max_latency_seconds;
    if (o.exhausted) ++o.windows_missed_at_floor;
  }
}

SloController::Pressure SloController::pressure_on(const ClassState& lower) const {
  Pressure p;
  bool any = false, all_idle = true, collecting = false, all_headroom = true, some_headroom = false;
  for (const ObjectiveState& o : objectives_) {
    const ClassState* owner = find(o.class_name);
    if (!owner || !owner->spec.enabled || owner->spec.priority >= lower.spec.priority) continue;
    any = true;
    if (o.verdict != SloVerdict::idle) all_idle = false;
    switch (o.verdict) {
      case SloVerdict::at_risk: {
        const double ratio = o.last_latency_seconds / o.objective.max_latency_seconds;
        if (ratio > p.worst_ratio) {
          p.worst_ratio = ratio;
          p.reason = o.class_name + " " + cmd_op_name(o.objective.op) + " " + quantile_label(o.objective.quantile) +
                     " " + micros(o.last_latency_seconds) + " >= " +
                     std::to_string(static_cast<int>(std::lround(tuning_.at_risk * 100))) + "% of " +
                     micros(o.objective.max_latency_seconds);
        }
        all_headroom = false;
        break;
      }
      case SloVerdict::idle:
        if (o.idle_windows < tuning_.idle_after) all_idle = false;
        break;
      case SloVerdict::collecting: collecting = true; break;
      case SloVerdict::hold: all_headroom = false; break;
      case SloVerdict::headroom: some_headroom = true; break;
      case SloVerdict::none: break;
    }
  }
  if (!any) return p;
  if (p.worst_ratio > 0) p.verdict = SloVerdict::at_risk;
  else if (all_idle) {
    p.verdict = SloVerdict::idle;
    p.reason = "protected classes idle";
  } else if (collecting) {
    p.verdict = SloVerdict::collecting;
    p.reason = "collecting samples";
  } else if (all_headroom && some_headroom) {
    p.verdict = SloVerdict::headroom;
    p.reason = "headroom below " + std::to_string(static_cast<int>(std::lround(tuning_.headroom * 100))) +
               "% of every objective";
  } else {
    p.verdict = SloVerdict::hold;
    p.reason = "within the hysteresis band";
  }
  return p;
}

bool SloController::adjust(ClassState& c, const Pressure& p, const SloObservation::Load& load) {
  c.verdict = c.controlled ? p.verdict : SloVerdict::none;
  if (!c.controlled) return false;
  const double before_bps = c.bps.effective, before_iops = c.iops.effective;
  bool confirming = false;
  if (c.verdict == SloVerdict::at_risk) {
    // Close to the target but still meeting it: one window may be noise.
    confirming = ++c.risk_windows < tuning_.cut_after && p.worst_ratio <= 1.0;
  } else {
    c.risk_windows = 0;
  }
  switch (confirming ? SloVerdict::collecting : c.verdict) {
    case SloVerdict::at_risk: {
      c.risk_windows = 0;
      c.headroom_windows = 0;
      c.plateau_windows = 0;
      if (c.probing) c.probe_wait = std::min(tuning_.probe_after_max, c.probe_wait * 2);
      c.probing = false;
      // Latency rises faster than linearly with the load near saturation, so a
      // cut by the square root of the excess is enough; a cut that falls short
      // is repeated next window while the objective is missed.
      const double factor = std::clamp(std::sqrt(tuning_.at_risk / p.worst_ratio), tuning_.deep_cut, tuning_.mild_cut);
      cut(c.bps, load.bytes_per_second * 8, factor, c.returning, tuning_);
      if (c.iops.adapted()) cut(c.iops, load.iops, factor, c.returning, tuning_);
      c.returning = false;
      ++c.cuts;
      break;
    }
    case SloVerdict::idle:
      c.headroom_windows = 0;
      c.plateau_windows = 0;
      // What was learned (safe, bad, the probe wait) still holds when the protected classes come back.
      c.probing = false;
      c.returning = true;
      grow(c.bps, tuning_);
      if (c.iops.adapted()) grow(c.iops, tuning_);
      break;
    case SloVerdict::headroom: {
      c.returning = false;
      settle(c.bps, tuning_);
      if (c.iops.adapted()) settle(c.iops, tuning_);
      if (++c.headroom_windows < tuning_.increase_after) break;
      if (c.probing && c.bps.safe && c.bps.effective > *c.bps.safe) {
        // The ceiling above the old bad rate met the objective: conditions changed.
        c.probing = false;
        c.probe_wait = tuning_.probe_after;
      }
      bool raised = raise(c.bps, tuning_);
      if (c.iops.adapted()) raised = raise(c.iops, tuning_) || raised;
      if (raised) {
        c.plateau_windows = 0;
        break;
      }
      const bool at_max = c.bps.effective >= c.bps.max && (!c.iops.adapted() || c.iops.effective >= c.iops.max);
      if (!at_max && ++c.plateau_windows >= c.probe_wait) {
        // Long enough just below the bad rate with headroom: it may be stale.
        probe(c.bps, tuning_);
        if (c.iops.adapted()) probe(c.iops, tuning_);
        c.probing = true;
        c.plateau_windows = 0;
      }
      break;
    }
    case SloVerdict::hold:
      c.returning = false;
      c.headroom_windows = 0;
      settle(c.bps, tuning_);
      if (c.iops.adapted()) settle(c.iops, tuning_);
      hold(c.bps);
      if (c.iops.adapted()) hold(c.iops);
      break;
    case SloVerdict::collecting:
    case SloVerdict::none:
      break;
  }
  const bool changed = c.bps.effective != before_bps || c.iops.effective != before_iops;
  if (changed) {
    if (c.verdict == SloVerdict::headroom || c.verdict == SloVerdict::idle) ++c.raises;
    c.last_reason = p.reason;
  }
  return changed;
}

std::vector<SloAdjustment> SloController::step(const SloObservation& obs) {
  judge_objectives(obs);
  note_exhaustion();
  std::vector<SloAdjustment> out;
  static const SloObservation::Load kNoLoad;
  for (ClassState& c : classes_) {
    const Pressure p = pressure_on(c);
    auto it = obs.load.find(c.spec.name);
    const double from_bps = c.bps.effective, from_iops = c.iops.effective;
    if (adjust(c, p, it == obs.load.end() ? kNoLoad : it->second))
      out.push_back({c.spec.name, c.verdict, from_bps, c.bps.effective, from_iops, c.iops.effective, p.reason});
  }
  return out;
}

}  // namespace nvqos::agent
