// Latency-SLO controller: keeps the latency objectives of protected classes by
// adapting the effective ceilings (bandwidth, IOPS) of lower-priority classes.
// Pure: it sees one observation per control interval (the latency histograms
// of the interval's completed commands per class and op, the lower classes'
// egress rates) and answers with effective ceilings; the agent measures and
// applies. Unit-tested against a simulated plant (tests/agent/slo_controller_test.cpp).
//
// The control law (docs/design.md, "Latency SLO controller"), per lower class:
//  - at risk (an objective's windowed quantile above its target, or >= at_risk x
//    its target in cut_after windows in a row): cut the ceiling multiplicatively
//    from what the class actually sends (so a ceiling far above the class's rate
//    bites at once), deeper the further the breach, and remember that rate as
//    "bad"; back to the remembered "safe" ceiling instead when that lies between.
//    A breach while the class sends no more than its safe rate is first taken
//    for a disturbance it did not cause (a stall of the host, another class's
//    burst): the cut protects the objective but safe and bad are kept and the
//    next raise returns to safe; a second breach there within settle_after
//    windows means conditions changed, and safe and bad move down.
//    The first cut after the protected classes were idle goes to the safe
//    ceiling from before they went idle whenever it is below the class's rate;
//  - headroom (every active objective below headroom x its target for
//    increase_after windows): remember the ceiling as "safe" and raise it —
//    halfway to the remembered bad rate (bisection), or by step x the ceiling,
//    doubling per raise in a row, when none is known; once safe and bad are
//    within resolution x bad it holds, and only probes step x bad past the bad
//    rate after a wait that doubles with every failed probe. Every size is
//    relative to the rates in play, never to the range up to the link, which
//    may be ten times the bottleneck that matters;
//  - between the two (the hysteresis band): hold;
//  - every protected objective idle (no commands) for idle_after windows: grow
//    geometrically back to the static ceiling, keeping safe/bad and the probe
//    wait for the return.
// Never below the floor (guarantee or minimum share), never above the static
// ceiling. The state is the ceiling itself, clamped: no integrator to wind up.
// A window missed with every adapted class already at its floor is counted as
// such (exhausted): nothing is left to cut, and the latency is not the
// neighbours' alone; the agent logs, exports and alerts on it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nvqos/histogram.hpp"

namespace nvqos::agent {

struct SloObjective {
  std::uint8_t op = 0;       // enum nvqos_cmd_op
  double quantile = 0.99;    // (0, 1)
  double max_latency_seconds = 0;
};

// One class as the controller sees it on one link.
struct SloClass {
  std::string name;
  unsigned priority = 0;  // 0 = highest
  // false: opted out — its objectives drive nothing and its ceilings are never adapted.
  bool enabled = true;
  std::vector<SloObjective> objectives;  // non-empty: protected
  // Bandwidth ceiling range in bits/s: floor = max(guarantee, min share of the
  // link), max = the static ceiling, or the link capacity without one.
  double floor_bps = 0;
  double max_bps = 0;
  // IOPS ceiling range; adapted only when the class has a static IOPS ceiling (max_iops > 0).
  double floor_iops = 0;
  double max_iops = 0;
};

struct SloTuning {
  std::chrono::milliseconds interval{250};
  double at_risk = 0.95;       // quantile / target at or above: cut ...
  unsigned cut_after = 3;      // ... after this many such windows in a row while still met; a miss cuts at once
  double headroom = 0.8;       // every quantile / target below: may raise ...
  unsigned increase_after = 2; // ... after this many such windows in a row
  double mild_cut = 0.9;       // multiplier at a ratio of at_risk ...
  double deep_cut = 0.5;       // ... down to this for a severe breach
  // Raise without a known bad rate: this share of the ceiling, doubled per raise in a row;
  // a probe goes this share past the bad rate.
  double step = 0.05;
  double resolution = 0.03;    // bisection stops when bad - safe < this share of bad
  unsigned probe_after = 40;   // headroom windows held below a known bad rate before probing past it
  unsigned probe_after_max = 320;  // the wait doubles per failed probe up to this
  // Windows the ceiling must keep the objective at its safe rate before a breach there is again
  // first taken for a disturbance the class did not cause (see cut()).
  unsigned settle_after = 12;
  unsigned idle_after = 2;     // windows without commands before protected objectives count as idle
  double idle_growth = 1.5;    // per window while idle
  std::uint64_t min_samples = 20;  // a window with fewer commands is merged with the next ...
  unsigned max_merge = 4;          // ... up to this many windows, then judged on what it has
  std::chrono::seconds compliance_horizon{300};  // compliance ratio over this much recent time
};

// What the agent measured over one control interval.
struct SloObservation {
  // Latency (ns, kernel histogram scheme) of the commands each class completed
  // in the interval, per op. A missing entry means no commands.
  std::map<std::pair<std::string, std::uint8_t>, LogLinearHistogram> latency;
  struct Load {
    double bytes_per_second = 0;  // egress bits/8 the ceiling shapes
    double iops = 0;
  };
  std::map<std::string, Load> load;  // lower classes; missing = 0
};

enum class SloVerdict { none, idle, collecting, hold, headroom, at_risk };
const char* to_string(SloVerdict v);

// One change of one class's effective ceilings (what step() did, or in dry run would do).
struct SloAdjustment {
  std::string class_name;
  SloVerdict verdict = SloVerdict::none;
  double from_bps = 0, to_bps = 0;
  double from_iops = 0, to_iops = 0;  // 0: no IOPS ceiling adapted
  std::string reason;  // "gold read p99 612us >= 90% of 500us", "headroom", ...
};

class SloController {
 public:
  explicit SloController(std::vector<SloClass> classes, SloTuning tuning = {});

  // One control interval. Returns the classes whose effective ceilings changed.
  std::vector<SloAdjustment> step(const SloObservation& obs);

  struct ObjectiveState {
    std::string class_name;
    SloObjective objective;
    SloVerdict verdict = SloVerdict::none;  // of the last window
    double last_latency_seconds = 0;        // last judged window's quantile
    std::uint64_t last_count = 0;           // commands in that window
    std::uint64_t windows_met = 0, windows_missed = 0;  // judged windows since start
    // The last judged window missed while every class adapted for this objective was already at
    // its floor: the controller had nothing left to cut, so the latency is not (only) theirs.
    bool exhausted = false;
    std::uint64_t windows_missed_at_floor = 0;  // of windows_missed
    // Share of judged windows within the compliance horizon that met the
    // objective; none before the first judged window.
    std::optional<double> compliance_ratio() const;
    // private to the controller
    LogLinearHistogram pending;
    unsigned pending_windows = 0;
    unsigned idle_windows = 0;
    std::deque<bool> recent;  // met?, newest last, bounded by the horizon
  };
  struct Dimension {
    double floor = 0, max = 0;
    double effective = 0;
    std::optional<double> safe, bad;
    double increment = 0;  // next raise without a known bad rate (0: step x the ceiling); doubles per raise
    // A breach at the safe rate was taken for a disturbance: safe and bad were kept, and the next
    // raise returns to safe. Cleared after settle_after windows kept at safe.
    bool disturbed = false;
    unsigned kept_at_safe = 0;
    bool adapted() const { return max > 0; }
    // At the floor, or within the last 1% of the range when the floor is 0 (cuts approach it
    // geometrically and never arrive).
    bool at_floor() const { return effective <= std::max(floor, 0.01 * max); }
  };
  struct ClassState {
    SloClass spec;
    bool controlled = false;  // enabled, with an enabled protected class above it
    Dimension bps, iops;
    SloVerdict verdict = SloVerdict::none;
    unsigned headroom_windows = 0;
    unsigned risk_windows = 0;
    unsigned plateau_windows = 0;
    unsigned probe_wait = 0;
    bool probing = false;
    bool returning = false;  // idle until the last judged window: the next cut may go straight to safe
    std::uint64_t cuts = 0, raises = 0;
    std::string last_reason;
  };

  const std::vector<ObjectiveState>& objectives() const { return objectives_; }
  const std::vector<ClassState>& classes() const { return classes_; }
  const ClassState* find(const std::string& class_name) const;
  const SloTuning& tuning() const { return tuning_; }

 private:
  struct Pressure {
    SloVerdict verdict = SloVerdict::none;
    double worst_ratio = 0;
    std::string reason;
  };
  void judge_objectives(const SloObservation& obs);
  void note_exhaustion();
  Pressure pressure_on(const ClassState& lower) const;
  bool adjust(ClassState& c, const Pressure& p, const SloObservation::Load& load);

  SloTuning tuning_;
  std::vector<ClassState> classes_;
  std::vector<ObjectiveState> objectives_;
  std::size_t horizon_windows_;
};

}  // namespace nvqos::agent
