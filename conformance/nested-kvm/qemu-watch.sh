# Sourced by run and run-ec2d: runs the L1 QEMU with a stall watchdog.
#
# Why: on CI, one nested run printed nothing at all for 890 s after L2 reached init, until the
# outer timeout killed QEMU. Not even the VMM's own 600 s timeout (a userspace thread in L1) fired,
# so L1 as a whole had stopped: the emulated machine wedged, not something our VMM waits on. The
# watchdog notices a console that stays silent for NESTED_KVM_STALL seconds, records where QEMU's
# vCPU is (`info registers` from the monitor) so the stall can be diagnosed, and boots L1 once
# more. The stall is announced loudly, the stalled attempt's log is kept beside LOG, and the gate
# reports the retry: a retry never hides. A second stall fails the run.
#
# qemu_watched LOG WORKDIR qemu-args...   (uses $TIMEOUT, say, loud; sets QEMU_STALLS;
#                                          returns 1 when both attempts stalled)

STALL=${NESTED_KVM_STALL:-240}
QEMU_STALLS=0

qemu_monitor() {  # $1 = socket, $2 = command; prints the reply
    python3 - "$1" "$2" <<'PY' 2>&1 || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
time.sleep(1)
out = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
except OSError:
    pass
sys.stdout.write(out.decode(errors="replace"))
PY
}

qemu_watched() {
    local log=$1 work=$2; shift 2
    local mon="$work/qemu-monitor.sock" attempt pid size last_size quiet start
    for attempt in 1 2; do
        rm -f "$mon"
        : > "$log"
        start=$(date +%s)
        timeout "$TIMEOUT" qemu-system-x86_64 "$@" -monitor "unix:$mon,server,nowait" \
            < /dev/null > "$log" 2>&1 &
        pid=$!
        tail -n +1 -f --pid=$pid "$log" &
        last_size=-1; quiet=0
        while kill -0 $pid 2>/dev/null; do
            sleep 10
            size=$(stat -c %s "$log")
            if [ "$size" = "$last_size" ]; then quiet=$((quiet + 10)); else quiet=0; last_size=$size; fi
            if [ $quiet -ge "$STALL" ]; then
                QEMU_STALLS=$((QEMU_STALLS + 1))
                loud "L1 STALLED: no console output for ${quiet} s (attempt $attempt); QEMU's vCPU state follows"
                qemu_monitor "$mon" "info registers" >&2
                kill $pid 2>/dev/null
                break
            fi
        done
        wait $pid 2>/dev/null || true
        sleep 0.2
        say "QEMU attempt $attempt finished after $(( $(date +%s) - start )) s"
        [ $quiet -ge "$STALL" ] || return 0
        [ "$attempt" = 1 ] || return 1
        # The gate reads only the last attempt; the stalled one is kept beside it.
        mv "$log" "$log.stalled-attempt1"
        loud "booting L1 again after the stall (attempt 2 of 2); attempt 1's log: $log.stalled-attempt1"
    done
}
