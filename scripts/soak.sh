#!/usr/bin/env bash
# A soak: runs the example servers under sustained load and checks that nothing leaks.
#
#   scripts/soak.sh 30s      # DURATION: 30s, 10m, 1h or plain seconds; at least 20 s
#
# Three phases, one after another, each against a fresh server bound to a port the kernel
# picks (127.0.0.1:0), each a 10 s warm-up and then DURATION under the measured load:
#   http-keep-alive   examples/http_server under wrk, 64 keep-alive connections
#   http-close        the same with `Connection: close`: a new connection per request
#   echo-churn        examples/echo_server under examples/echo_churn: 4 client threads that
#                     connect, make 1-4 checksummed round trips, close, and start again
# The warm-up is the same load at twice the concurrency. The pages a server keeps (warm
# stacks in green's pool, free memory in malloc's arenas) follow the most connections it
# has had open at once; under the measured load alone that peak rises in rare steps for
# minutes (+6% in 10 min of http-close), which is not a leak. After the warm-up the
# measured load stays below that peak, and what is left to grow is what leaks.
# The server's RSS (VmRSS) and open descriptors are sampled every 10 s under the measured
# load, and once more 4 s before its end. A sample is the least RSS seen over 2 s: the
# stacks of the fibers running at that instant swing RSS by up to 15% within a second,
# while leaked memory is never given back and so is in the minimum too.
# A phase passes when
#   - there are no errors, warm-up included: wrk's socket errors (connect, read, write,
#     timeout) and non-2xx responses, echo_churn's failed connections, any line the server
#     prints on stderr;
#   - RSS grows less than 5% from the baseline, the first sample after the first tenth of
#     the measured load, to the last sample;
#   - the descriptors return to the idle count measured before the warm-up, within 30 s of
#     the end of the load;
#   - the server is still running.
# It prints a table and exits 0 if every phase passed, 1 otherwise, saying why and keeping
# the logs (server and load output, samples, descriptor listings). Needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

# Load and limits; see the header.
readonly WRK_THREADS=2 WRK_CONNECTIONS=64 CHURN_THREADS=4
readonly WARM_UP_SECONDS=10 WARM_UP_SCALE=2
readonly SAMPLE_EVERY=10 RSS_LIMIT_PERCENT=5 FD_SETTLE_SECONDS=30 STARTUP_SECONDS=30
# wrk counts a request as a timeout after this long: generous, so that a loaded 2-core
# machine does not fail the soak, while a request that never completes (a lost wake-up)
# still counts.
readonly REQUEST_TIMEOUT=20s

usage() {
    echo "usage: $0 DURATION   (per phase, three phases; e.g. 30s, 10m, 1h, 45)" >&2
    exit 2
}

# 1. Arguments and tools.
[ $# -eq 1 ] || usage
[[ $1 =~ ^([0-9]+)(s|m|h)?$ ]] || usage
case "${BASH_REMATCH[2]}" in
    m) seconds=$((BASH_REMATCH[1] * 60)) ;;
    h) seconds=$((BASH_REMATCH[1] * 3600)) ;;
    *) seconds=$((BASH_REMATCH[1])) ;;
esac
if [ "$seconds" -lt 20 ]; then
    echo "soak: DURATION must be at least 20 s: with a sample every ${SAMPLE_EVERY} s, a" \
         "shorter phase has no RSS trend to judge" >&2
    exit 2
fi
command -v wrk >/dev/null || { echo "soak: wrk is missing (apt-get install wrk)" >&2; exit 2; }

# 2. Build the servers and the churn client.
echo "== building the examples (release)"
cargo build --release --example http_server --example echo_server --example echo_churn
target_dir=$(cargo metadata --format-version 1 --no-deps |
             sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/examples"

logs=$(mktemp -d "${TMPDIR:-/tmp}/green-soak.XXXXXX")
server_pid='' load_pid='' sampler_pid=''
failed=0

# Stops whatever this script started that still runs; keeps the logs if something failed.
cleanup() {
    local status=$? pid
    if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
        echo "soak: stopped by a failing command (status $status)" >&2
    fi
    if [ -n "$sampler_pid" ]; then touch "$logs/stop-sampler"; fi
    for pid in $load_pid $server_pid $sampler_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$failed" -eq 0 ]; then rm -rf "$logs"; else echo "soak: logs kept in $logs" >&2; fi
}
trap cleanup EXIT
trap 'failed=1; exit 130' INT
trap 'failed=1; exit 143' TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Prints "RSS FDS" of process $1 (KiB, descriptors); nothing once it has exited.
measure() {
    local rss fds
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 0
    # shellcheck disable=SC2012 # the names are numbers
    fds=$(ls "/proc/$1/fd" 2>/dev/null | wc -l) || return 0
    if [ -n "$rss" ]; then echo "$rss $fds"; fi
}

# Prints "RSS FDS" of process $1: the least of each over 2 s (9 looks, 0.25 s apart).
sample() {
    local i
    for i in 1 2 3 4 5 6 7 8 9; do
        measure "$1"
        [ "$i" -eq 9 ] || sleep 0.25
    done | awk 'NR == 1 || $1 < rss { rss = $1 } NR == 1 || $2 < fds { fds = $2 }
                END { if (NR) print rss, fds }'
}

# Appends "MS RSS FDS" for process $1 to file $2, MS counted from $3 (when the load
# started): every SAMPLE_EVERY seconds, and a last time 4 s before the load's end, so that
# every sample, 2 s long, is taken under load (the load runs at least `seconds` from $3).
# Stops early if the file stop-sampler appears or the process exits.
sampler() {
    local last=$((seconds * 1000 - 4000)) next=0 elapsed taken
    while [ ! -e "$logs/stop-sampler" ] && [ "$next" -le "$last" ]; do
        elapsed=$(( $(now_ms) - $3 ))
        if [ "$elapsed" -ge "$next" ]; then
            taken=$(sample "$1")
            [ -n "$taken" ] || return 0
            echo "$elapsed $taken" >>"$2"
            next=$((next + SAMPLE_EVERY * 1000))
            if [ "$next" -gt "$last" ] && [ "$elapsed" -lt "$last" ]; then next=$last; fi
        fi
        sleep 0.25
    done
}

# Starts example $1 on a free port; sets server_pid and address once a connect succeeds.
start_server() {
    local deadline=$(( $(now_ms) + STARTUP_SECONDS * 1000 ))
    : >"$logs/$phase.server.out"
    "$bin/$1" 127.0.0.1:0 >"$logs/$phase.server.out" 2>"$logs/$phase.server.err" &
    server_pid=$!
    # It prints its address once bound: wait for that line, then for a connect to succeed.
    address=
    until [ -n "$address" ]; do
        address=$(grep -o '127\.0\.0\.1:[0-9]\+' "$logs/$phase.server.out" | head -n 1) || true
        kill -0 "$server_pid" 2>/dev/null || { echo "soak: $1 exited at start-up" >&2; return 1; }
        [ "$(now_ms)" -lt "$deadline" ] || { echo "soak: $1 printed no address" >&2; return 1; }
        [ -n "$address" ] || sleep 0.1
    done
    until (exec 3<>"/dev/tcp/${address%:*}/${address#*:}") 2>/dev/null; do
        [ "$(now_ms)" -lt "$deadline" ] || { echo "soak: $address never accepted" >&2; return 1; }
        sleep 0.1
    done
}

# Runs the load of phase $1 for $2 seconds at $3 times the measured concurrency, output
# to file $4, in the background, and waits for it; sets load_status. `timeout` ends a load
# that hangs well past its duration.
run_load() {
    local load=(timeout -k 10 $(($2 + 120)))
    local wrk=(wrk -t"$WRK_THREADS" -c$((WRK_CONNECTIONS * $3)) -d"$2s" --timeout "$REQUEST_TIMEOUT")
    case "$1" in
        http-keep-alive) load+=("${wrk[@]}" "http://$address/") ;;
        http-close) load+=("${wrk[@]}" -H 'Connection: close' "http://$address/") ;;
        echo-churn) load+=("$bin/echo_churn" "$address" "$2" $((CHURN_THREADS * $3))) ;;
    esac
    "${load[@]}" >"$4" 2>&1 &
    load_pid=$!
    load_status=0
    wait "$load_pid" || load_status=$?
    load_pid=''
}

# Reads the output of a load of phase $1 from file $2: sets connections and requests, adds
# to errors, and appends to reasons, each prefixed with $3.
count_load() {
    local socket non2xx failed_connections=0
    connections='' requests=''
    if [ "$1" = echo-churn ]; then
        read -r connections requests failed_connections < <(awk '/^connections / { print $2, $4, $6 }' "$2") || true
        failed_connections=${failed_connections:-0}
        [ "$failed_connections" -eq 0 ] || reasons+=("$3echo_churn: $failed_connections connections failed, first: $(grep -m 1 'echo_churn:' "$2")")
        errors=$((errors + failed_connections))
    else
        requests=$(awk '/ requests in / { print $1 }' "$2")
        socket=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 + \2 + \3 + \4/p' "$2")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$2")
        errors=$((errors + ${socket:-0} + ${non2xx:-0}))
        [ $(( ${socket:-0} )) -eq 0 ] || reasons+=("$3wrk: $(grep -o 'Socket errors:.*' "$2")")
        [ "${non2xx:-0}" -eq 0 ] || reasons+=("$3wrk: $non2xx responses were not 2xx or 3xx")
        connections=$WRK_CONNECTIONS
        [ "$1" != http-close ] || connections=$requests
    fi
    if [ -z "$requests" ]; then
        requests=- connections=- errors=$((errors + 1))
        reasons+=("$3the load printed no totals (exit status $load_status; see ${2##*/})")
    elif [ "$load_status" -ne 0 ] && [ "$failed_connections" -eq 0 ]; then
        errors=$((errors + 1))
        reasons+=("$3the load exited with status $load_status (see ${2##*/})")
    fi
}

# Judges the samples of phase $1: sets count, rss_base, rss_final and growth; appends to
# reasons. Samples from after the load's end (a sampler held up) are left out.
judge_rss() {
    local under_load from=$((seconds * 100)) after_warm_up
    under_load=$(awk -v end=$((seconds * 1000)) 'NF == 3 && $1 < end' "$logs/$1.samples")
    count=$(echo "$under_load" | awk 'NF == 3' | wc -l)
    after_warm_up=$(echo "$under_load" | awk -v from="$from" 'NF == 3 && $1 >= from')
    rss_base=$(echo "$after_warm_up" | awk 'NF == 3 { print $2; exit }')
    rss_final=$(echo "$after_warm_up" | awk 'NF == 3 { rss = $2 } END { print rss }')
    if [ "$(echo "$after_warm_up" | awk 'NF == 3' | wc -l)" -lt 2 ]; then
        rss_base=- rss_final=- growth=-
        reasons+=("fewer than two RSS samples after the warm-up: no trend to judge")
        return
    fi
    growth=$(awk -v b="$rss_base" -v f="$rss_final" 'BEGIN { printf "%.1f%%", (f - b) * 100 / b }')
    if awk -v g="${growth%\%}" -v l="$RSS_LIMIT_PERCENT" 'BEGIN { exit !(g >= l) }'; then
        reasons+=("RSS grew ${growth} after the warm-up ($rss_base KiB to $rss_final KiB), limit ${RSS_LIMIT_PERCENT}%")
    fi
    echo "   at s:        $(echo "$under_load" | awk '{ printf "%6d", $1 / 1000 }')"
    echo "   RSS KiB:     $(echo "$under_load" | awk '{ printf "%6d", $2 }')"
    echo "   descriptors: $(echo "$under_load" | awk '{ printf "%6d", $3 }')"
}

# After the load: waits up to FD_SETTLE_SECONDS for the descriptors to fall back to
# fds_base; sets fds_final (- if the server is gone) and appends to reasons.
settle_fds() {
    local waited=0
    while fds_final=$(measure "$server_pid" | cut -d' ' -f2); [ -n "$fds_final" ] &&
          [ "$fds_final" -gt "$fds_base" ] && [ "$waited" -lt $((FD_SETTLE_SECONDS * 4)) ]; do
        sleep 0.25
        waited=$((waited + 1))
    done
    ls -l "/proc/$server_pid/fd" >"$logs/$phase.fds-after" 2>/dev/null || true
    if [ -z "$fds_final" ]; then
        fds_final=-
        reasons+=("the server exited during the phase (see $phase.server.err)")
    elif [ "$fds_final" -gt "$fds_base" ]; then
        reasons+=("$fds_final descriptors open ${FD_SETTLE_SECONDS} s after the load, $fds_base before it (see $phase.fds-before and $phase.fds-after)")
    fi
}

# One phase: a fresh server, the load, the samples, the verdict; appends a row to the table.
run_phase() {
    phase=$1
    local start server_errors reason verdict=pass
    reasons=()
    errors=0
    echo "== $phase: $2, ${WARM_UP_SECONDS} s of warm-up, then ${seconds} s under load"

    # 1. Start the server; count its descriptors while idle (the least over 2 s, as the
    #    connect probe's socket may still be open).
    start_server "$2" || { failed=1; exit 1; }
    fds_base=$(sample "$server_pid" | cut -d' ' -f2)
    [ -n "$fds_base" ] || { echo "soak: $2 exited at start-up" >&2; failed=1; exit 1; }
    ls -l "/proc/$server_pid/fd" >"$logs/$phase.fds-before" 2>/dev/null || true

    # 2. Warm up, then load it, sampling all along.
    run_load "$phase" "$WARM_UP_SECONDS" "$WARM_UP_SCALE" "$logs/$phase.warm-up.out"
    count_load "$phase" "$logs/$phase.warm-up.out" "warm-up: "
    start=$(now_ms)
    rm -f "$logs/stop-sampler"
    : >"$logs/$phase.samples"
    sampler "$server_pid" "$logs/$phase.samples" "$start" &
    sampler_pid=$!
    run_load "$phase" "$seconds" 1 "$logs/$phase.load.out"
    touch "$logs/stop-sampler"
    wait "$sampler_pid" || true
    sampler_pid=

    # 3. The descriptors return; the server lived through it; stop it.
    settle_fds
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=

    # 4. The verdict: load errors, server errors, RSS.
    count_load "$phase" "$logs/$phase.load.out" ""
    server_errors=$(wc -l <"$logs/$phase.server.err")
    if [ "$server_errors" -gt 0 ]; then
        errors=$((errors + server_errors))
        reasons+=("the server printed $server_errors lines on stderr, first: $(head -n 1 "$logs/$phase.server.err")")
    fi
    judge_rss "$phase"
    for reason in "${reasons[@]}"; do
        failures+=("$phase: $reason")
        verdict=FAIL
    done
    rows+=("| $phase | $count | $rss_base | $rss_final | $growth | $fds_base | $fds_final | $connections | $requests | $errors | $verdict |")
}

rows=() failures=()
run_phase http-keep-alive http_server
run_phase http-close http_server
run_phase echo-churn echo_server

echo
echo "soak: ${seconds} s under load per phase, after ${WARM_UP_SECONDS} s of warm-up at" \
     "${WARM_UP_SCALE}x the concurrency; RSS baseline: the first sample after the first tenth" \
     "of the load; fds: idle before the warm-up, and after the load; requests and" \
     "connections: the measured load; errors: the warm-up's too"
echo
echo "| phase | samples | RSS baseline KiB | RSS final KiB | RSS growth | fds baseline | fds final | connections | requests | errors | verdict |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
echo
if [ ${#failures[@]} -gt 0 ]; then
    failed=1
    echo "soak FAILED:" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "soak passed"
