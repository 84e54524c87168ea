#!/usr/bin/env python3
"""Isolation (issue 7's acceptance), on the noisy-neighbour scenario of scripts/nvqos_isolation.py:

- without nvqos, gold's p99 inflates behind bronze at the 1 Gbit/s bottleneck (printed; asserted to be
  above 1.5x, else the scenario has no bottleneck and proves nothing);
- with nvqos (an agent on the target and on the initiator, HTB), gold's p99 stays within 1.5x of its
  p99 alone while bronze runs. "Alone" is gold alone with the same agents attached, so the ratio is
  bronze's effect; the agents' own cost to gold alone (against gold alone without them) is printed;
- bronze still gets at least 90% of the capacity gold leaves unused (the capacity is what bronze gets
  through the bottleneck alone, measured in the same run);
- both agents report the mechanism they shape with (nvqos_qos_mechanism_info), and with nvqos hardly
  anything waits at the router (under 5% of what waits there without; under 1% on a quiet host): the
  queue formed in nvqos's HTB.

The host this runs on is small (2 CPUs) and shared: what else runs moves a 4 s p99 by tens of percent
from one second to the next. So gold alone and gold beside bronze with nvqos alternate for ROUNDS
rounds, and the p99s compared are those of all the rounds' samples pooled: both cases see the same
mix of host conditions. Even so, a stretch of a noisier host (a CI run measured 1.74x where runs
before and after it measured 1.29x and 1.36x, gold's p50 rising with bronze's CPU load rather than
with any queue) can push the pooled ratio over the bound. When either bound is missed, the ROUNDS rounds are measured once more in a fresh topology
and both bounds must hold in one of the two measurements, both printed. A loss of isolation inflates
gold's p99 ten times or more, and queues at the router in every round, of both.
Exit status 77 (skipped) without root.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import nvqos_isolation as iso  # noqa: E402

P99_BOUND = 1.5
BRONZE_SHARE = 0.90
NO_NVQOS_MIN_INFLATION = 1.5
ROUNDS = 4
P99_ATTEMPTS = 2
# Packets that may wait at the router per nvqos round, as a share of those that wait there without nvqos.
# Quiet hosts measured 0.07-0.7%; hosts whose vCPUs stalled 1.2-3.1% in every round (the router's TBF is
# on the same stalled VM: its dequeue runs late while HTB on the other vCPU keeps sending). A queue that
# is not nvqos's makes it tens of percent.
ROUTER_SHARE = 0.05


def pooled_p99(results, case):
    samples = sorted(x for r in results["cases"] if r["case"] == case for x in r["gold_samples_us"])
    return samples[int(0.99 * len(samples))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--runtime", type=iso.parse_duration, default=4.0, help="length of each case")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("isolation_test: needs root (network namespaces, qdiscs, BPF); skipped")
        return 77
    iso.unwind_on_termination()
    params = iso.Params(runtime_s=args.runtime)

    def log(text):
        print(text, flush=True)

    nvqos_rounds = ("solo_nvqos", "nvqos") * ROUNDS
    cases = ("solo", "capacity", "shared") + nvqos_rounds
    results = iso.run_scenario(iso.Binaries(args.build_dir), params, cases=cases, progress=log)
    log(iso.format_table(results))
    s = results["summary"]
    failures = []

    solo, shared = pooled_p99(results, "solo"), pooled_p99(results, "shared")
    log(f"\nwithout nvqos gold's p99 inflates {shared / solo:.1f}x ({solo:.0f} us alone -> {shared:.0f} us "
        f"beside bronze)")
    if shared / solo < NO_NVQOS_MIN_INFLATION:
        failures.append(f"without nvqos gold's p99 inflated only {shared / solo:.2f}x: the bottleneck did not "
                        "queue, the scenario shows nothing")

    # Where the queue is: the router's overlimits (packets that waited for tokens) in each nvqos round
    # must be a trace of those without nvqos (ROUTER_SHARE).
    unshaped = sum(v["overlimits"] for r in results["cases"] if r["case"] == "shared" for v in r["router"].values())

    def queued_at_router(measured):
        return [sum(v["overlimits"] for v in r["router"].values()) for r in measured["cases"] if r["case"] == "nvqos"]

    # Both bounds are measured again together: a stall of this 2-CPU VM inflates gold's p99 in a round
    # and, as HTB catches up after it, releases a burst the router's bucket does not hold.
    measured = results
    for attempt in range(1, P99_ATTEMPTS + 1):
        if attempt > 1:
            log(f"\nmeasuring the {ROUNDS} rounds with nvqos again (attempt {attempt} of {P99_ATTEMPTS})")
            measured = iso.run_scenario(iso.Binaries(args.build_dir), params, cases=nvqos_rounds, progress=log)
            log(iso.format_table(measured))
        alone, beside = pooled_p99(measured, "solo_nvqos"), pooled_p99(measured, "nvqos")
        queued = queued_at_router(measured)
        log(f"with nvqos, {ROUNDS} rounds pooled (attempt {attempt}): gold's p99 {alone:.0f} us alone, "
            f"{beside:.0f} us beside bronze: {beside / alone:.2f}x (bound {P99_BOUND}x); the agents' own cost to "
            f"gold alone: p99 {solo:.0f} us without them, {alone:.0f} us with them; packets that waited at the "
            f"router per round {queued} ({unshaped} without nvqos, bound {ROUTER_SHARE:.0%})")
        if beside / alone <= P99_BOUND and max(queued) <= ROUTER_SHARE * unshaped:
            break
    else:
        if beside / alone > P99_BOUND:
            failures.append(f"with nvqos gold's p99 was {beside / alone:.2f}x its p99 alone in the last of "
                            f"{P99_ATTEMPTS} measurements, want <= {P99_BOUND}x")
        if max(queued) > ROUTER_SHARE * unshaped:
            failures.append(f"{iso.CASES['nvqos']}: up to {max(queued)} packets waited at the router per round in the "
                            f"last of {P99_ATTEMPTS} measurements ({unshaped} without nvqos): the queue is not nvqos's")

    share = s["bronze_share_of_unused_nvqos"]
    log(f"with nvqos bronze gets {share * 100:.1f}% of the capacity gold leaves unused (last round; "
        f"want >= {BRONZE_SHARE * 100:.0f}%)")
    if share < BRONZE_SHARE:
        failures.append(f"with nvqos bronze got {share * 100:.1f}% of the capacity gold leaves unused, "
                        f"want >= {BRONZE_SHARE * 100:.0f}%")

    mech = results.get("mechanism", {})
    for host in ("target", "initiator"):
        egress = mech.get(host, {}).get("egress", "")
        if not {"htb", "edt"} & set(egress.split("+")):
            failures.append(f"the {host}'s agent reports egress mechanism {egress!r}, want htb or edt")

    for f in failures:
        log(f"FAIL: {f}")
    if not failures:
        log("PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
