#!/usr/bin/env python3
"""Host half of the interop scenario: reads each phase's capture with tshark's NVMe/TCP dissector.

Per phase: the digests negotiated in ICReq/ICResp are the ones the phase asked for, tshark finds no
malformed PDU, and - when the capture lost no segment - every header and data digest checks out.
Appends to out/checks.tsv like the guest's checks.
"""
import pathlib
import shutil
import subprocess
import sys

BAD = "0"  # tshark's checksum status: 0 bad, 1 good, 2 unverified


def tshark(pcap, port, fields, display_filter=None):
    cmd = ["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},nvme-tcp",
           "-o", "nvme-tcp.check_hdgst:TRUE", "-o", "nvme-tcp.check_ddgst:TRUE", "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    if display_filter:
        cmd += ["-Y", display_filter]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def main():
    out = pathlib.Path(sys.argv[1]) / "out"
    checks = []

    def record(status, name, detail):
        checks.append(f"{status}\t{name}\t{detail}")
        print(f"{status:4} {name} — {detail}")

    pcaps = sorted(out.glob("*.pcap"))
    if pcaps and not shutil.which("tshark"):
        record("skip", "pcap-analysis", "tshark not installed on the host (scripts/install-deps.sh)")
        pcaps = []
    for pcap in pcaps:
        tag = pcap.stem
        port = 4420 if tag.startswith("load-") else 4421
        want = "3" if "header-data" in tag else "0"
        rows = tshark(pcap, port, ["nvme-tcp.icreq.digest", "nvme-tcp.icresp.digest"],
                      "nvme-tcp.icreq || nvme-tcp.icresp")
        if not rows:
            record("fail", f"{tag}-pcap-icreq", "no ICReq/ICResp in the capture")
            continue
        got = {v for row in rows for v in row if v}
        if got == {want}:
            record("pass", f"{tag}-pcap-digest-negotiated", f"ICReq/ICResp digest field {want} in {len(rows)} PDUs")
        else:
            record("fail", f"{tag}-pcap-digest-negotiated", f"ICReq/ICResp digest values {sorted(got)}, asked for {want}")
        # Where tcpdump dropped a segment, tshark loses the PDU boundaries of that TCP stream from there
        # on: findings after the first loss in a stream cannot be judged.
        first_loss = {}
        for frame, stream in tshark(pcap, port, ["frame.number", "tcp.stream"], "tcp.analysis.lost_segment"):
            first_loss.setdefault(stream, int(frame))

        def judged(rows):
            sure, unsure = [], []
            for frame, stream in rows:
                loss = first_loss.get(stream)
                (unsure if loss is not None and int(frame) >= loss else sure).append(frame)
            return sure, unsure

        lost_note = f" ({len(first_loss)} stream(s) lost segments in the capture)" if first_loss else ""
        malformed, unsure = judged(tshark(pcap, port, ["frame.number", "tcp.stream"], "_ws.malformed"))
        if malformed:
            record("fail", f"{tag}-pcap-malformed", f"tshark finds malformed NVMe/TCP in frames {malformed[:5]}")
        else:
            record("pass", f"{tag}-pcap-malformed",
                   "no malformed PDU" + (f"; {len(unsure)} after a capture loss not judged" if unsure else lost_note))
        if want == "3":
            bad, unsure = judged(tshark(pcap, port, ["frame.number", "tcp.stream"],
                                        f"nvme-tcp.hdgst.status == {BAD} || nvme-tcp.ddgst.status == {BAD}"))
            good = tshark(pcap, port, ["frame.number"], "nvme-tcp.hdgst.status == 1 || nvme-tcp.ddgst.status == 1")
            if bad:
                record("fail", f"{tag}-pcap-digests-valid", f"bad digest in frames {bad[:5]}")
            elif not good:
                record("fail", f"{tag}-pcap-digests-valid", "no digest verified in the capture")
            else:
                record("pass", f"{tag}-pcap-digests-valid", f"digests good in {len(good)} frames"
                       + (f"; {len(unsure)} after a capture loss not judged" if unsure else lost_note))

    with open(out / "checks.tsv", "a") as f:
        for c in checks:
            f.write(c + "\n")


if __name__ == "__main__":
    main()
