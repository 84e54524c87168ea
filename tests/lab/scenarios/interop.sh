# Interop (issue 5, scenario 2): our NVMe/TCP tools against the kernel's, with and without digests.
#   A. nvqos-load (reads + writes with verify) against the kernel target nvmet-tcp
#   B. the kernel host nvme-tcp + fio --verify against nvqos-target
# Each phase keeps a packet capture (first packets, for the connect and early I/O) and the kernel log
# lines it produced, so a protocol disagreement can be read from the PDUs.
# shellcheck source=../guest/lib.sh
. /lab/guest/lib.sh

NQN_KERNEL=nqn.2026-01.io.nvqos.lab:interop-kernel
NQN_OURS=nqn.2026-01.io.nvqos.lab:interop-nvqos
KERNEL_PORT=4420
OURS_PORT=4421
DIGEST_MODES=(none header,data)

if ! have_bin nvqos-load && ! have_bin nvqos-target; then
  skip interop "neither nvqos-load nor nvqos-target is built (binaries staged: ${LAB_BINARIES:-none})"
  finish
fi
load_modules nvmet nvmet-tcp nvme-tcp || finish

# capture_start NAME PORT: tcpdump of the phase's first 2000 packets on loopback (connects and a few
# hundred I/Os, ~25 MB with 64 KiB loopback frames), to $OUT/NAME.pcap.
# It writes to tmpfs and the file moves to the 9p share afterwards: writing through 9p under TCG is
# slow enough to make tcpdump drop packets.
capture_start() {
  CAPTURE_NAME=$1
  tcpdump -i lo -s 0 -B 32768 -c 2000 -w "/tmp/$1.pcap" "tcp port $2" >/dev/null 2>&1 &
  CAPTURE_PID=$!
  sleep 1
}
capture_stop() {
  kill "$CAPTURE_PID" 2>/dev/null
  wait "$CAPTURE_PID" 2>/dev/null
  mv "/tmp/$CAPTURE_NAME.pcap" "$OUT/"
}

# kernel_log_since MARK NAME: the kernel's NVMe lines since MARK go to $OUT/NAME.dmesg; fails on errors.
kernel_log_mark() { dmesg | wc -l; }
kernel_log_check() {
  local mark=$1 name=$2 bad
  dmesg | tail -n +"$((mark + 1))" | grep -i 'nvme' >"$OUT/$name.dmesg"
  bad=$(grep -i -E 'error|digest|invalid|failed|reset|timeout' "$OUT/$name.dmesg" | head -3)
  if [[ -z $bad ]]; then pass "$name-kernel-log" "no NVMe errors in dmesg"; else fail "$name-kernel-log" "$bad"; fi
}

# ---------------- A. nvqos-load -> kernel nvmet-tcp ----------------
if have_bin nvqos-load; then
  truncate -s 256M /tmp/interop-kernel-ns.img
  nvmet_subsystem $NQN_KERNEL /tmp/interop-kernel-ns.img \
    && nvmet_port 1 127.0.0.1 $KERNEL_PORT && nvmet_link 1 $NQN_KERNEL \
    && pass kernel-target "$NQN_KERNEL on 127.0.0.1:$KERNEL_PORT" || fail kernel-target "nvmet configfs setup failed"

  for digest in "${DIGEST_MODES[@]}"; do
    tag=load-digest-${digest/,/-}
    mark=$(kernel_log_mark)
    capture_start "$tag" $KERNEL_PORT
    # Two jobs at once on disjoint ranges: 4 KiB I/O (write data in-capsule) and 256 KiB I/O (writes
    # through R2T + H2CData, reads in several C2HData PDUs).
    cat >"/tmp/$tag.jobs.json" <<EOF
{ "jobs": [
  { "name": "small", "target": "127.0.0.1:$KERNEL_PORT", "subnqn": "$NQN_KERNEL", "digest": "$digest",
    "rw": "randrw", "rwmix-read": 50, "bs": "4k", "qd": 8, "queues": 2, "offset": "0", "size": "64m",
    "runtime": "5s", "verify": true },
  { "name": "large", "target": "127.0.0.1:$KERNEL_PORT", "subnqn": "$NQN_KERNEL", "digest": "$digest",
    "rw": "randrw", "rwmix-read": 50, "bs": "256k", "qd": 4, "queues": 1, "offset": "64m", "size": "64m",
    "runtime": "5s", "verify": true }
] }
EOF
    log "nvqos-load against nvmet-tcp, digest $digest: 4 KiB and 256 KiB jobs with verify"
    nvqos-load --job-file "/tmp/$tag.jobs.json" --json --progress off >"$OUT/$tag.json" 2>"$OUT/$tag.stderr"
    rc=$?
    capture_stop
    cat "$OUT/$tag.stderr"
    check_eq "$tag-exit" "$rc" 0
    report=$OUT/$tag.json
    if jq -e . "$report" >/dev/null 2>&1; then
      check_eq "$tag-no-fatal" "$(jq -r '[.jobs[].error // empty] | join("; ")' "$report")" ""
      for job in small large; do
        sel=".jobs[] | select(.name == \"$job\")"
        check_gt "$tag-$job-reads" "$(jq "[$sel | .ops.read.ios // 0] | add // 0" "$report")" 0 "reads"
        check_gt "$tag-$job-writes" "$(jq "[$sel | .ops.write.ios // 0] | add // 0" "$report")" 0 "writes"
        check_gt "$tag-$job-verified" "$(jq "[$sel | .verify.checked_chunks // 0] | add // 0" "$report")" 0 "chunks verified"
      done
      # The kernel target grants 16 KiB of in-capsule data (6.1 and 6.12): the small job's writes
      # must travel in the capsule and the large job's through R2T.
      check_eq "$tag-small-write-path" "$(jq -r '.jobs[] | select(.name == "small") | .writes' "$report")" in-capsule
      check_eq "$tag-large-write-path" "$(jq -r '.jobs[] | select(.name == "large") | .writes' "$report")" r2t
      check_eq "$tag-io-errors" "$(jq -c '[.jobs[].ops[].errors | if type == "object" then (to_entries[] | .value) else . end] | add // 0' "$report")" 0
    else
      fail "$tag-report" "no JSON report: $(tail -2 "$OUT/$tag.stderr")"
    fi
    kernel_log_check "$mark" "$tag"
  done
  nvmet_clear
else
  skip load-vs-kernel-target "nvqos-load not built"
fi

# ---------------- B. kernel nvme-tcp + fio -> nvqos-target ----------------
if have_bin nvqos-target; then
  log "starting nvqos-target on 127.0.0.1:$OURS_PORT"
  nvqos-target --listen 127.0.0.1:$OURS_PORT --subsystem $NQN_OURS --namespace 256M --allow-any-host \
    >"$OUT/nvqos-target.log" 2>&1 &
  target_pid=$!
  for ((i = 0; i < 50; i++)); do ss -Hltn "sport = :$OURS_PORT" | grep -q . && break; sleep 0.2; done
  if ss -Hltn "sport = :$OURS_PORT" | grep -q .; then pass nvqos-target-listening "127.0.0.1:$OURS_PORT"
  else fail nvqos-target-listening "nvqos-target is not listening: $(tail -3 "$OUT/nvqos-target.log")"; fi

  for digest in "${DIGEST_MODES[@]}"; do
    tag=kernel-host-digest-${digest/,/-}
    opts=()
    [[ $digest == none ]] || opts=(--hdr-digest --data-digest)
    mark=$(kernel_log_mark)
    capture_start "$tag" $OURS_PORT
    if check "$tag-connect" nvme_tcp_connect $NQN_OURS 127.0.0.1 $OURS_PORT "${opts[@]}"; then
      if dev=$(nvme_dev $NQN_OURS); then
        pass "$tag-device" "$dev"
        # Mixed sizes: 4 KiB writes go in-capsule, 64 KiB and 256 KiB ones through R2T + H2CData
        # (beyond the target's 16 KiB in-capsule and 128 KiB MAXH2CDATA defaults).
        fio_run "$tag" --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
          --bssplit=4k/50:64k/25:256k/25 --iodepth=8 --size=48M --verify=crc32c --do_verify=1 --verify_fatal=1
        fio_check "$tag"
      else
        fail "$tag-device" "no block device for $NQN_OURS"
      fi
      check "$tag-disconnect" nvme disconnect -n $NQN_OURS
    fi
    capture_stop
    kernel_log_check "$mark" "$tag"
  done
  if kill -0 "$target_pid" 2>/dev/null; then
    pass nvqos-target-alive "survived both hosts"
    kill -TERM "$target_pid"
    wait "$target_pid"
    check_eq nvqos-target-exit "$?" 0
  else
    wait "$target_pid"
    fail nvqos-target-alive "nvqos-target exited $? during the run: $(tail -3 "$OUT/nvqos-target.log")"
  fi
else
  skip kernel-host-vs-nvqos-target "nvqos-target not built"
fi
finish
