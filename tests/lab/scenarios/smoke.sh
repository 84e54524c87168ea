# Smoke: proves the lab itself. The kernel's NVMe/TCP target (nvmet-tcp) exports a null_blk device and
# a file on tmpfs on 127.0.0.1:4420; the kernel host (nvme-tcp) connects to both; fio reads the first
# and writes+verifies the second; the host disconnects and the target is torn down.
# shellcheck source=../guest/lib.sh
. /lab/guest/lib.sh

NQN_NULL=nqn.2026-01.io.nvqos.lab:smoke-null
NQN_FILE=nqn.2026-01.io.nvqos.lab:smoke-file

load_modules nvmet nvmet-tcp nvme-tcp || finish
modprobe null_blk nr_devices=1 gb=1 bs=4096 || fail modprobe-null_blk
truncate -s 256M /tmp/smoke-ns.img

nvmet_subsystem $NQN_NULL /dev/nullb0 \
  && nvmet_subsystem $NQN_FILE /tmp/smoke-ns.img \
  && nvmet_port 1 127.0.0.1 4420 \
  && nvmet_link 1 $NQN_NULL && nvmet_link 1 $NQN_FILE
check nvmet-listening ss -Hltn 'sport = :4420'

check nvme-discover nvme discover -t tcp -a 127.0.0.1 -s 4420
check connect-null nvme_tcp_connect $NQN_NULL 127.0.0.1 4420
check connect-file nvme_tcp_connect $NQN_FILE 127.0.0.1 4420
dev_null=$(nvme_dev $NQN_NULL) && pass dev-null "$dev_null" || fail dev-null "no block device for $NQN_NULL"
dev_file=$(nvme_dev $NQN_FILE) && pass dev-file "$dev_file" || fail dev-file "no block device for $NQN_FILE"
nvme list

if [[ -n ${dev_null:-} ]]; then
  fio_run randread --filename="$dev_null" --ioengine=libaio --direct=1 --rw=randread --bs=4k \
    --iodepth=16 --time_based --runtime=5 --ramp_time=1
  fio_check randread
fi
if [[ -n ${dev_file:-} ]]; then
  fio_run write-verify --filename="$dev_file" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
    --iodepth=8 --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1
  fio_check write-verify
fi

check disconnect-null nvme disconnect -n $NQN_NULL
check disconnect-file nvme disconnect -n $NQN_FILE
if nvme_dev $NQN_NULL 1 >/dev/null; then fail dev-gone "block device still present after disconnect"; else pass dev-gone; fi
nvmet_clear
finish
