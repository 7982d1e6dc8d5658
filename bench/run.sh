#!/usr/bin/env bash
# Benchmarks ballast against HAProxy and NGINX on the same workloads, in one run.
# Installs what it needs from apt, builds ballast in release mode, then runs bench/run.py.
# Usage: bench/run.sh [--quick]      (results are printed and written to bench/out/)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in haproxy nginx wrk h2load openssl; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  pkgs=$(printf '%s\n' "${need[@]}" | sed 's/^h2load$/nghttp2-client/' | sort -u | tr '\n' ' ')
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq $pkgs
fi
# The stock nginx service would hold port 80; the benchmark starts its own instances.
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || { sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"; $sudo_cmd apt-get install -y -qq libnginx-mod-stream; }
(command -v systemctl >/dev/null && systemctl stop nginx haproxy 2>/dev/null) || true
cargo build --release --locked
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 bench/run.py "$@"
