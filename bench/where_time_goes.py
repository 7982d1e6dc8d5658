#!/usr/bin/env python3
"""Where a workload's time goes, per request: the CPU of the proxy, of wrk and of the NGINX
backend (user and system, from /proc and wrk's rusage), the time of each core by kind (user,
system, softirq, idle, from /proc/stat) and the TCP segments sent (`nstat`), for each proxy in
turn (order turning each round), as run.py runs it.

Why, beside run.py and side_by_side.py: when every core is busy, a proxy's own saving can be
spent by the load generator or the backend (on loopback, the receiver's processing runs in the
sender's system call), and the total is what sets the rate. This shows who pays (step 45 of
bench/RESULTS.md).

Usage: bench/run.sh builds ballast and installs the tools; then
    python3 bench/where_time_goes.py
BENCH_ONLY=e2 (one of a, b, e2; default e2), BENCH_THREADS=1 (the proxy's worker threads;
below all cores the proxy is pinned to core 0 and the rest to the other cores, as in run.py),
BENCH_ROUNDS (default 3), BENCH_PROXIES=ballast,haproxy,nginx (default ballast,haproxy).
"""

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (the proxies' configs and the helpers are shared)

WORKLOAD = os.environ.get("BENCH_ONLY", "e2")
THREADS = int(os.environ.get("BENCH_THREADS", 1))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
PROXIES = os.environ.get("BENCH_PROXIES", "ballast,haproxy").split(",")
DURATION = 5
HZ = os.sysconf("SC_CLK_TCK")
# Port and whether each request comes on a new connection.
LOADS = {"a": (R.HTTP, False), "b": (R.HTTP, True), "e2": (R.TCP, True)}
SEGMENTS = ["TcpOutSegs", "TcpExtTCPPureAcks"]


def core_times():
    """{core: [user, nice, system, idle, iowait, irq, softirq, steal]} in ticks."""
    cores = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                fields = line.split()
                cores[int(fields[0][3:])] = [int(v) for v in fields[1:9]]
    return cores


def children_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def segments():
    out = subprocess.run(["nstat", "-z"] + SEGMENTS, capture_output=True, text=True).stdout
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:] if line.split()}


def one_run(proxy_pid, backends_pid, port, close):
    cmd = ["wrk", "-t", str(max(1, len(os.sched_getaffinity(0)))), "-c", "64", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    url = f"http://127.0.0.1:{port}/"
    subprocess.run(cmd + ["-d", f"{R.WARM_UP}s", url], capture_output=True, timeout=R.WARM_UP + 60)
    subprocess.run(["nstat", "-n"], capture_output=True)
    cores0, wrk0 = core_times(), children_seconds()
    proxy0, backend0 = R.cpu_seconds(proxy_pid), R.cpu_seconds(backends_pid)
    out = subprocess.run(cmd + ["-d", f"{DURATION}s", url], capture_output=True, text=True,
                         timeout=DURATION + 60).stdout
    cores1, wrk1 = core_times(), children_seconds()
    proxy1, backend1 = R.cpu_seconds(proxy_pid), R.cpu_seconds(backends_pid)
    sent = segments()
    found = re.search(r"(\d+) requests in", out)
    n = int(found.group(1)) if found else 0
    if not n:
        return None
    us = 1e6 / n
    row = {"rps": n / DURATION, "p99 ms": R.parse_latency(out, 99) or 0.0,
           "proxy us": (proxy1 - proxy0) * us, "wrk us": (wrk1 - wrk0) * us,
           "backend us": (backend1 - backend0) * us}
    row["all us"] = row["proxy us"] + row["wrk us"] + row["backend us"]
    for core in sorted(cores1):
        d = [b - a for a, b in zip(cores0[core], cores1[core])]
        for name, i in (("usr", 0), ("sys", 2), ("sirq", 6), ("idle", 3)):
            row[f"core{core} {name} us"] = d[i] / HZ * us
    for key, value in sent.items():
        row[key.replace("TcpExt", "").replace("Tcp", "") + "/req"] = value / n
    return row


def main():
    if WORKLOAD not in LOADS:
        sys.exit(f"BENCH_ONLY must be one of {', '.join(LOADS)}")
    port, close = LOADS[WORKLOAD]
    work = tempfile.mkdtemp(prefix="ballast-where-")
    cert, key, combined = R.certificate(work)
    backends = subprocess.Popen(R.backend_config(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    placed = R.placement(THREADS)
    proxy_cpus, load_cpus = placed if placed else (None, set(R.PINNED_FROM))
    os.sched_setaffinity(0, load_cpus)
    configs = {
        "ballast": R.ballast_config(work, THREADS, cert, key),
        "haproxy": R.haproxy_config(work, THREADS, combined),
        "nginx": R.nginx_config(work, THREADS, cert, key),
    }
    results = {name: [] for name in PROXIES}
    try:
        for p in R.BACKENDS:
            R.wait_port(p)
        R.pin([backends.pid], load_cpus)
        for rnd in range(ROUNDS):
            order = PROXIES[rnd % len(PROXIES):] + PROXIES[:rnd % len(PROXIES)]
            for name in order:
                cmd, env = configs[name]
                proc = R.start(cmd, env, proxy_cpus)
                try:
                    row = one_run(proc.pid, backends.pid, port, close)
                finally:
                    R.stop(proc)
                if row:
                    results[name].append(row)
                    print(f"round {rnd + 1} {name:8} " + "  ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
    finally:
        backends.terminate()
    print(f"\n{WORKLOAD} at {THREADS} worker thread(s), {ROUNDS} rounds: medians per request")
    keys = [k for k in next((r[0] for r in results.values() if r), {})]
    print("| " + " | ".join(["proxy"] + keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, rows in results.items():
        if rows:
            print("| " + " | ".join([name] + [f"{statistics.median(r[k] for r in rows):.2f}" for k in keys]) + " |")


if __name__ == "__main__":
    main()
