#!/usr/bin/env python3
"""CPU per request, side by side: ballast and HAProxy (and, with BENCH_WITH_NGINX=1, NGINX) run
at the same time, each with one worker thread, all pinned to the same core, each loaded by a
load generator of its own (wrk, or h2load for d) on the other cores, over the same seconds.
Prints, per workload, the median over rounds of each proxy's CPU time per request (user and
system, read from /proc) and of ballast's ratio to each of the others within a round.

Why, beside run.py: this machine's speed drifts by up to a quarter within a minute, and
run.py's runs, one after another, cancel that only in part (a tie there flips from run to
run). Proxies measured over the same seconds on the same core meet the same machine: their
ratio of cost per request is steady to a fraction of a percent. It is a figure of cost, not
of speed or latency; run.py measures those.

Usage: bench/run.sh builds ballast and installs the tools; then
    python3 bench/side_by_side.py
BENCH_ROUNDS (default 5), BENCH_ONLY=a,e2 (workloads: a b c1 c2 d e2), BENCH_WITH_NGINX=1,
BENCH_BASELINE=path/to/another/ballast (runs that build as "baseline" beside this one, in
HAProxy's place: what a change to ballast saves, in CPU per request).
Results: printed, and written to bench/out/side_by_side.{md,json}.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (the proxies' configs and the helpers are shared)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
DURATION = 5
# Each proxy listens this far above run.py's ports, so that two can run at once.
SHIFTS = {"ballast": 10000, "haproxy": 20000, "baseline": 20000, "nginx": 30000}
BASELINE = os.environ.get("BENCH_BASELINE")

WORKLOADS = {
    "a": ("HTTP/1.1 keep-alive, 64 conns", "http", False),
    "b": ("new connection per request", "http", True),
    "c1": ("HTTPS handshakes (no resumption)", "https", True),
    "c2": ("HTTPS keep-alive", "https", False),
    "d": ("HTTP/2, 100 streams x 10 conns", "h2", False),
    "e2": ("L4 TCP new connections", "tcp", True),
}
if os.environ.get("BENCH_ONLY"):
    WORKLOADS = {k: v for k, v in WORKLOADS.items() if k in os.environ["BENCH_ONLY"].split(",")}


def load(kind, close, shift):
    """The load generator's command for one proxy, and how to read its request count."""
    if kind == "h2":
        cmd = ["h2load", "-c", "10", "-m", "100", "-D", str(DURATION), f"https://127.0.0.1:{R.HTTPS + shift}/"]
        return cmd, r"requests: \d+ total, \d+ started, (\d+) done"
    port = {"http": R.HTTP, "https": R.HTTPS, "tcp": R.TCP}[kind] + shift
    scheme = "https" if kind == "https" else "http"
    cmd = ["wrk", "-t", "1", "-c", "64", "-d", f"{DURATION}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    return cmd + [f"{scheme}://127.0.0.1:{port}/"], r"(\d+) requests in"


def one_round(proxies, kind, close, proxy_cpus):
    """Runs every proxy at once under its own load; returns {name: (requests, cpu seconds)}."""
    procs = {}
    try:
        for name, (cmd, env) in proxies.items():
            procs[name] = subprocess.Popen(["taskset", "-c", ",".join(map(str, sorted(proxy_cpus)))] + cmd,
                                           env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        for name in proxies:
            for port in (R.HTTP, R.HTTPS, R.TCP):
                if not R.wait_port(port + SHIFTS[name]):
                    raise RuntimeError(f"{name} did not open port {port + SHIFTS[name]}")
        time.sleep(0.5)
        before = {name: R.cpu_seconds(p.pid) for name, p in procs.items()}
        loads = {}
        for name in proxies:
            cmd, pattern = load(kind, close, SHIFTS[name])
            loads[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True),
                           pattern)
        out = {}
        for name, (gen, pattern) in loads.items():
            text = gen.communicate(timeout=DURATION + 60)[0]
            m = re.search(pattern, text)
            out[name] = int(m.group(1)) if m else 0
        return {name: (out[name], R.cpu_seconds(p.pid) - before[name]) for name, p in procs.items()}
    finally:
        for p in procs.values():
            R.stop(p)


def main():
    if len(R.PINNED_FROM) < 2:
        sys.exit("side_by_side.py needs two cores: one for the proxies, the rest for the load")
    proxy_cpus, load_cpus = {R.PINNED_FROM[0]}, set(R.PINNED_FROM[1:])
    work = tempfile.mkdtemp(prefix="ballast-side-")
    cert, key, combined = R.certificate(work)
    backends = subprocess.Popen(R.backend_config(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.sched_setaffinity(0, load_cpus)
    names = ["ballast", "baseline" if BASELINE else "haproxy"] + (["nginx"] if os.environ.get("BENCH_WITH_NGINX") else [])
    results = {}
    try:
        for port in R.BACKENDS:
            R.wait_port(port)
        R.pin([backends.pid], load_cpus)
        configs = {
            "ballast": R.ballast_config(work, 1, cert, key, SHIFTS["ballast"]),
            "haproxy": R.haproxy_config(work, 1, combined, SHIFTS["haproxy"]),
            "nginx": R.nginx_config(work, 1, cert, key, SHIFTS["nginx"]),
        }
        if BASELINE:
            ours, R.BALLAST = R.BALLAST, os.path.abspath(BASELINE)
            configs["baseline"] = R.ballast_config(work, 1, cert, key, SHIFTS["baseline"])
            R.BALLAST = ours
        proxies = {name: configs[name] for name in names}
        for key_, (label, kind, close) in WORKLOADS.items():
            for rnd in range(ROUNDS):
                got = one_round(proxies, kind, close, proxy_cpus)
                results.setdefault(key_, []).append(got)
                print(f"{key_:3} round {rnd + 1}: " + "  ".join(
                    f"{n} {r} requests, {c / r * 1e6 if r else 0:.2f} us CPU each" for n, (r, c) in got.items()),
                    flush=True)
    finally:
        backends.terminate()
    lines = report(results, names)
    text = "\n".join(lines)
    print(text)
    os.makedirs(R.OUT, exist_ok=True)
    with open(os.path.join(R.OUT, "side_by_side.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(R.OUT, "side_by_side.json"), "w") as f:
        json.dump(results, f, indent=1)


def report(results, names):
    others = [n for n in names if n != "ballast"]
    lines = [
        f"Side by side on one core; {time.strftime('%Y-%m-%d')}; rounds: {ROUNDS}; {DURATION}s each.",
        "CPU per request in microseconds (user + system), median over rounds; ratios are ballast's, "
        "the median of each round's own.",
        "",
        "| workload | " + " | ".join(f"{n} us/req" for n in names) + " | "
        + " | ".join(f"CPU vs {n}" for n in others) + " | " + " | ".join(f"requests vs {n}" for n in others) + " |",
        "|---" * (1 + len(names) + 2 * len(others)) + "|",
    ]
    for key_, rounds in results.items():
        cost = {n: [c / r * 1e6 for r, c in (rd[n] for rd in rounds) if r] for n in names}
        cells = [f"{key_} {WORKLOADS[key_][0]}"] + [f"{statistics.median(cost[n]):.2f}" if cost[n] else "-"
                                                    for n in names]
        for field in (1, 0):
            for n in others:
                ratios = []
                for rd in rounds:
                    (br, bc), (orq, oc) = rd["ballast"], rd[n]
                    if br and orq:
                        ratios.append((bc / br) / (oc / orq) if field == 1 else br / orq)
                cells.append(f"{statistics.median(ratios):.3f}" if ratios else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
