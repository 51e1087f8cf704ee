#!/usr/bin/env bash
# Benchmark: tail -> JSON -> (mask) -> gzip -> directory sink (or HTTP) over the DESIGN.md
# reference workload.
#   scripts/bench.sh [--mask] [--http] [--otlp [--string-body]] [--files N] [--partition] [--encrypt]
#                    [--integrity] [--parquet] [--export] [MB]
#                          (default 524 MB; --mask adds all default detectors and two field
#                          rules, as in config.example.toml; --http ships gzip NDJSON to a local
#                          receiver, DESIGN.md's peer comparison; --otlp ships OTLP/HTTP
#                          (protobuf, gzip, three attributes, the account as a resource) to
#                          the same receiver (--string-body: the record's text as the body,
#                          only the mapped fields parsed); --files N splits the same
#                          bytes into N files at line boundaries: cost against file count;
#                          --partition puts {account_id} in the key, --encrypt encrypts per
#                          account_id and hour with a local KEK: the cost of encryption;
#                          --integrity chains and signs what the sink stores: its cost;
#                          --parquet writes Parquet (zstd columns, 32 MiB batches) instead
#                          of gzip NDJSON, compare with the same run without it)
#                          --export: then `logferry export` of the whole archive to /dev/null
#                          (records by ts, hourly keys), without and with --where; MB/s of
#                          records out. Combine with --encrypt --integrity.
# Prints input MB/s, CPU seconds per GB and peak RSS for `logferry run --once`, and the same for
# `gzip -6` over the same bytes (the compression floor). Criterion micro-benchmarks of the hot
# path: `cargo bench --bench hot_path`.
set -euo pipefail
cd "$(dirname "$0")/.."
MASK=0
HTTP=0
OTLP=0
STRING_BODY=0
FILES=
PARTITION=0
ENCRYPT=0
INTEGRITY=0
PARQUET=0
EXPORT=0
while [ "${1:-}" = "--mask" ] || [ "${1:-}" = "--http" ] || [ "${1:-}" = "--otlp" ] \
    || [ "${1:-}" = "--string-body" ] \
    || [ "${1:-}" = "--files" ] \
    || [ "${1:-}" = "--partition" ] || [ "${1:-}" = "--encrypt" ] \
    || [ "${1:-}" = "--integrity" ] || [ "${1:-}" = "--parquet" ] || [ "${1:-}" = "--export" ]; do
    case "$1" in
        --mask) MASK=1 ;;
        --http) HTTP=1 ;;
        --otlp) HTTP=1; OTLP=1 ;;
        --string-body) STRING_BODY=1 ;;
        --files) FILES=$2; shift ;;
        --partition) PARTITION=1 ;;
        --encrypt) ENCRYPT=1 ;;
        --integrity) INTEGRITY=1 ;;
        --parquet) PARQUET=1 ;;
        --export) EXPORT=1 ;;
    esac
    shift
done
# The release binaries, where cargo puts them.
REL=${CARGO_TARGET_DIR:-target}/release
MB=${1:-524}
WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK/logs"

cargo build --release --quiet --bin logferry --example workload --example receiver
if [ ! -f "$WORK/logs/work.log" ] || [ "$(stat -c %s "$WORK/logs/work.log")" -lt $((MB << 20)) ]; then
    "$REL"/examples/workload "$WORK/logs/work.log" "$MB"
fi
INPUT="$WORK/logs"
if [ -n "$FILES" ]; then
    # The same bytes in N files, cut at line boundaries (made once per N and size).
    INPUT="$WORK/split-$FILES-$MB"
    if [ ! -d "$INPUT" ]; then
        mkdir -p "$INPUT.tmp"
        head -c $((MB << 20)) "$WORK/logs/work.log" | head -n -1 > "$INPUT.tmp/all"
        split -n "l/$FILES" -a 6 -d --additional-suffix=.log "$INPUT.tmp/all" "$INPUT.tmp/part-"
        rm "$INPUT.tmp/all"
        mv "$INPUT.tmp" "$INPUT"
    fi
fi
cat > "$WORK/bench.toml" <<TOML
data_dir = "$WORK/data"
[sources.bench]
include = ["$INPUT/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "$WORK/archive"
compression = "gzip"
batch = { max_bytes = "8MiB", max_records = 50000, max_age = "30s" }
TOML
if [ "$HTTP" = 1 ]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo 0 > "$WORK/received"
    "$REL"/examples/receiver "$PORT" "$WORK/received" &
    RECEIVER=$!
    trap 'kill $RECEIVER 2>/dev/null || true' EXIT
    if [ "$OTLP" = 1 ]; then
        sed -i "s|^type = \"directory\"\$|type = \"otlp\"\nendpoint = \"http://127.0.0.1:$PORT\"\nattributes = [\"job_id\", \"flow\", \"context.user_id\"]\nresource_fields = [\"account_id\"]|; /^path = /d" "$WORK/bench.toml"
        if [ "$STRING_BODY" = 1 ]; then
            sed -i 's|^resource_fields = .*$|&\nbody = "string"|' "$WORK/bench.toml"
        fi
    else
        sed -i "s|^type = \"directory\"\$|type = \"http\"\nurl = \"http://127.0.0.1:$PORT/ingest\"\ncheck = \"none\"|; /^path = /d" "$WORK/bench.toml"
    fi
fi
if [ "$PARTITION" = 1 ]; then
    sed -i 's|^type = "directory"$|type = "directory"\nkey = "{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz"|' "$WORK/bench.toml"
fi
if [ "$ENCRYPT" = 1 ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/kek.hex"
    chmod 600 "$WORK/kek.hex"
    sed -i 's|^compression = "gzip"$|compression = "gzip"\nencryption = { kek = "bench", tenant_field = "account_id" }|' "$WORK/bench.toml"
    printf '[keks.bench]\nprovider = "local"\nkey_file = "%s"\n' "$WORK/kek.hex" >> "$WORK/bench.toml"
fi
if [ "$INTEGRITY" = 1 ]; then
    rm -f "$WORK/sign.pem" "$WORK/sign.pem.pub"
    "$REL"/logferry keygen --out "$WORK/sign.pem" >/dev/null
    sed -i 's|^compression = "gzip"$|compression = "gzip"\nintegrity = true|' "$WORK/bench.toml"
    printf '[signing]\nkey_file = "%s"\n' "$WORK/sign.pem" >> "$WORK/bench.toml"
fi
if [ "$PARQUET" = 1 ]; then
    sed -i 's|^compression = "gzip"$|encoding = "parquet"|; s|^batch = .*$|batch = { max_records = 1000000, max_age = "30s" }|' "$WORK/bench.toml"
fi
if [ "$EXPORT" = 1 ]; then
    if [ "$ENCRYPT" = 1 ]; then
        # Batches never span two tenant-hours: by read time (no timestamp_field), so that the
        # workload's 1,000 accounts times its hours of record time do not make a file per
        # record or two.
        sed -i 's|^type = "directory"$|type = "directory"\nkey = "{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz"|' "$WORK/bench.toml"
    else
        sed -i 's|^sinks = \["archive"\]$|sinks = ["archive"]\ntimestamp_field = "ts"|; s|^type = "directory"$|type = "directory"\nkey = "{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz"|' "$WORK/bench.toml"
    fi
fi
if [ "$MASK" = 1 ]; then
    sed -i 's/^sinks = \["archive"\]$/sinks = ["archive"]\nmasking = "pii"/' "$WORK/bench.toml"
    cat benches/mask-profile.toml >> "$WORK/bench.toml"
    export LOGFERRY_BENCH_HMAC_KEY=bench-only-key-0123456789abcdef
fi

measure() { # label, command...: runs it and prints wall s, cpu s, peak rss MB
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
t = time.time()
with open("/dev/null", "wb") as null:
    subprocess.run(cmd, check=True, stdout=null)
wall = time.time() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{label} {wall:.3f} {ru.ru_utime + ru.ru_stime:.3f} {ru.ru_maxrss / 1024:.1f}")
PY
}

BYTES=$(cat "$INPUT"/*.log | wc -c)
rm -rf "$WORK/data" "$WORK/archive"
sync
read -r _ LW LC LR < <(RUST_LOG=warn measure logferry "$REL"/logferry run --once --config "$WORK/bench.toml")
read -r _ GW GC GR < <(measure gzip sh -c "cat '$INPUT'/*.log | gzip -6 -c > /dev/null")
if [ "$HTTP" = 1 ]; then OUT=$(cat "$WORK/received"); else OUT=$(du -sb "$WORK/archive" | cut -f1); fi

if [ "$EXPORT" = 1 ]; then
    EXP=("$REL"/logferry export --config "$WORK/bench.toml" --sink archive --by bench
         --no-receipt --from 2000-01-01 --to 2100-01-01)
    read -r _ EW EC ER < <(measure export "${EXP[@]}")
    read -r _ WW WC WR < <(measure where "${EXP[@]}" --where status=failed)
    python3 - "$BYTES" "$EW" "$EC" "$ER" "$WW" "$WC" "$WR" <<'PY'
import sys
b, ew, ec, er, ww, wc, wr = map(float, sys.argv[1:])
mb = b / 1e6
print(f"export of {mb:.0f} MB of records (uncompressed NDJSON out):")
print(f"{'':14} {'wall s':>8} {'MB/s':>8} {'CPU s/GB':>9} {'peak RSS MB':>12}")
print(f"{'all records':14} {ew:8.2f} {mb/ew:8.1f} {ec/(b/1e9):9.1f} {er:12.1f}")
print(f"{'--where':14} {ww:8.2f} {mb/ww:8.1f} {wc/(b/1e9):9.1f} {wr:12.1f}")
PY
fi

MASK=$MASK HTTP=$HTTP OTLP=$OTLP STRING_BODY=$STRING_BODY FILES=$FILES PARQUET=$PARQUET python3 - "$BYTES" "$OUT" "$LW" "$LC" "$LR" "$GW" "$GC" "$GR" <<'PY'
import sys
b, out, lw, lc, lr, gw, gc, gr = map(float, sys.argv[1:])
mb, gb = b / 1e6, b / 1e9
import os
print("masking: all default detectors + two field rules" if os.environ.get("MASK") == "1" else "masking: off")
print(("sink: otlp (protobuf, string body) to a local receiver" if os.environ.get("STRING_BODY") == "1" else "sink: otlp (protobuf) to a local receiver") if os.environ.get("OTLP") == "1" else "sink: http to a local receiver" if os.environ.get("HTTP") == "1" else "sink: directory")
print("encoding: parquet (zstd columns)" if os.environ.get("PARQUET") == "1" else "encoding: gzip NDJSON")
print(f"files: {os.environ.get('FILES') or 1}")
print(f"input: {mb:.0f} MB of job/audit JSON lines ({b/ (1<<20):.0f} MiB); archive {out/1e6:.1f} MB (ratio {b/out:.1f})")
print(f"{'':10} {'wall s':>8} {'MB/s':>8} {'CPU s/GB':>9} {'peak RSS MB':>12}")
print(f"{'logferry':10} {lw:8.2f} {mb/lw:8.1f} {lc/gb:9.1f} {lr:12.1f}")
print(f"{'gzip -6':10} {gw:8.2f} {mb/gw:8.1f} {gc/gb:9.1f} {gr:12.1f}")
PY
[ -n "${BENCH_DIR:-}" ] || rm -rf "$WORK"
