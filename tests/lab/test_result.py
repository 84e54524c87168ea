#!/usr/bin/env python3
"""Unit test of result.py, the lab's verdict on one boot (no qemu needed): pass, fail, skip, error."""
import json
import pathlib
import subprocess
import sys
import tempfile
import unittest

RESULT_PY = pathlib.Path(__file__).with_name("result.py")


def verdict(checks=None, guest_env=None, qemu_rc=0):
    with tempfile.TemporaryDirectory() as d:
        run = pathlib.Path(d)
        (run / "out").mkdir()
        if checks is not None:
            (run / "out" / "checks.tsv").write_text("".join(f"{s}\t{n}\t{t}\n" for s, n, t in checks))
        if guest_env is not None:
            (run / "out" / "guest.env").write_text("".join(f"{k}={v}\n" for k, v in guest_env.items()))
        (run / "console.log").write_text("[    1.0] Kernel panic - not syncing: test\n")
        subprocess.run([sys.executable, str(RESULT_PY), str(run), "--kernel", "6.12", "--release", "r",
                        "--scenario", "s", "--accel", "tcg", "--qemu-rc", str(qemu_rc), "--wall-s", "12.5"],
                       check=True, capture_output=True)
        return json.loads((run / "result.json").read_text())


FINISHED = {"kernel_release": "6.12.0", "init_uptime_s": "5.5", "end_uptime_s": "20.0", "scenario_rc": "0"}


class ResultStatus(unittest.TestCase):
    def test_pass_needs_a_passing_check_and_no_failure(self):
        r = verdict([("pass", "a", "x"), ("skip", "b", "not built")], FINISHED)
        self.assertEqual(r["status"], "pass")
        self.assertEqual(r["counts"], {"pass": 1, "fail": 0, "skip": 1})
        self.assertEqual(r["scenario_s"], 14.5)
        self.assertEqual(r["kernel_release"], "6.12.0")

    def test_one_failed_check_fails_the_boot(self):
        r = verdict([("pass", "a", ""), ("fail", "b", "got 1, expected 0")], FINISHED)
        self.assertEqual(r["status"], "fail")
        self.assertEqual(r["checks"][1], {"name": "b", "status": "fail", "detail": "got 1, expected 0"})

    def test_nonzero_scenario_exit_fails_even_with_passing_checks(self):
        r = verdict([("pass", "a", "")], dict(FINISHED, scenario_rc="124"))
        self.assertEqual(r["status"], "fail")

    def test_only_skips_is_skip(self):
        self.assertEqual(verdict([("skip", "a", "nvqos-target not built")], FINISHED)["status"], "skip")

    def test_no_checks_at_all_fails(self):
        r = verdict([], FINISHED)
        self.assertEqual(r["status"], "fail")
        self.assertIn("no checks", r["reason"])

    def test_guest_that_never_reported_is_error(self):
        r = verdict([("pass", "a", "")], None, qemu_rc=0)
        self.assertEqual(r["status"], "error")
        self.assertIsNone(r["scenario_s"])

    def test_timeout_is_named(self):
        r = verdict(None, None, qemu_rc=124)
        self.assertEqual(r["status"], "error")
        self.assertIn("timeout", r["reason"])


if __name__ == "__main__":
    unittest.main()
