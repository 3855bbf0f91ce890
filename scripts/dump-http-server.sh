#!/usr/bin/env bash
# A fiber dump of examples/http_server serving 100 idle keep-alive connections: starts the
# server, opens the connections (one request and its response on each, then nothing, so
# that each connection's fiber waits in its read), sends SIGQUIT and prints what the
# server wrote to stderr: the dump.
#
#   scripts/dump-http-server.sh [connections] [port]
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-100}
port=${2:-18080}

cargo build --release --example http_server >&2
target_dir=${CARGO_TARGET_DIR:-target}
stderr=$(mktemp)
"$target_dir/release/examples/http_server" "127.0.0.1:$port" >/dev/null 2>"$stderr" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$stderr"' EXIT

# Wait for the listener.
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done

# The connections, kept open on descriptors of this shell.
fds=()
for _ in $(seq "$connections"); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' >&"$fd"
    while IFS= read -r -u "$fd" line; do
        [ "$line" = "hello" ] && break
    done
    fds+=("$fd")
done

kill -QUIT "$server"
for _ in $(seq 200); do
    grep -q "green: end of fiber dump" "$stderr" && break
    sleep 0.05
done
cat "$stderr"
