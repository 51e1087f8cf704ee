#!/usr/bin/env bash
# Cost against the number of files: the same bytes (default 200 MB of the reference workload)
# in 1, 100, 1,000 and 10,000 files, shipped by `run --once` to the directory sink
# (scripts/bench.sh --files N), then follow mode on 10,000 files: peak RSS once everything is
# read, open descriptors, and the CPU the idle process uses over 30 s.
#   scripts/bench-files.sh [MB]
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-200}
WORK=${BENCH_DIR:-$(mktemp -d)}
export BENCH_DIR=$WORK
printf '%-8s %8s %8s %9s %12s\n' files "wall s" "MB/s" "CPU s" "peak RSS MB"
for n in 1 100 1000 10000; do
    out=$(scripts/bench.sh --files "$n" "$MB")
    mbs=$(awk '/^logferry /{print $3}' <<<"$out")
    read -r _ wall _ _ rss < <(grep '^logferry ' <<<"$out")
    input=$(awk '/^input:/{print $2}' <<<"$out")
    cpu=$(awk -v w="$wall" -v m="$input" '/^logferry /{printf "%.2f", $4 * m / 1000}' <<<"$out")
    printf '%-8s %8s %8s %9s %12s\n' "$n" "$wall" "$mbs" "$cpu" "$rss"
done

# Follow mode on the 10,000 files.
SPLIT="$WORK/split-10000-$MB"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$WORK/follow"
mkdir -p "$WORK/follow"
cat > "$WORK/follow/logferry.toml" <<TOML
data_dir = "$WORK/follow/data"
[api]
listen = "127.0.0.1:$PORT"
[sources.bench]
include = ["$SPLIT/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "$WORK/follow/archive"
compression = "gzip"
batch = { max_bytes = "8MiB", max_records = 50000, max_age = "1s" }
TOML
LINES=$(cat "$SPLIT"/*.log | wc -l)
RUST_LOG=warn ./target/release/logferry run --config "$WORK/follow/logferry.toml" 2>"$WORK/follow/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
python3 - "$PID" "$PORT" "$LINES" <<'PY'
import os, sys, time, urllib.request
pid, port, lines = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def metric(name):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    return sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith(name))
start = time.time()
while (metric("logferry_records_sent_total") or 0) < lines:
    if time.time() - start > 600:
        sys.exit("follow mode did not ship everything in 10 minutes")
    time.sleep(0.5)
shipped = time.time() - start
time.sleep(5)  # let the last checkpoint and batch timers settle before measuring idle
def ticks():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
hz = os.sysconf("SC_CLK_TCK")
t0, c0 = time.time(), ticks()
time.sleep(30)
idle = (ticks() - c0) / hz / (time.time() - t0) * 100
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
fds = len(os.listdir(f"/proc/{pid}/fd"))
print(f"follow mode, 10000 files: everything shipped in {shipped:.1f} s; peak RSS "
      f"{int(status['VmHWM'].split()[0]) / 1024:.1f} MB; {fds} descriptors open; idle CPU "
      f"{idle:.2f}% of a core over 30 s")
PY
