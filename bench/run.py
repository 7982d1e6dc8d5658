#!/usr/bin/env python3
"""Runs ballast, HAProxy and NGINX in turn on each workload (A B C, then B C A, C A B, ...) and
prints, per workload, the median requests per second, p50 and p99 latency and peak memory of
each, with the ratios ballast/HAProxy and ballast/NGINX. Direct-to-backend runs give the limit.

Workloads (each at 1 worker thread and at all cores):
  a  HTTP/1.1 keep-alive, small responses, 64 connections            (wrk)
  b  a new connection per request                                     (wrk, Connection: close)
  c1 HTTPS full handshakes per second (no resumption)                 (wrk, Connection: close)
  c2 HTTPS keep-alive                                                 (wrk)
  d  HTTP/2 over TLS, 100 concurrent streams                          (h2load)
  e1 L4 TCP: one 1 GiB transfer                                       (python client and sink)
  e2 L4 TCP: new connections per second                               (wrk, Connection: close)
  f  10,000 idle keep-alive client connections: memory held           (python asyncio)
Started by bench/run.sh, which installs the tools and builds ballast.

CPU placement: when the proxy runs with fewer worker threads than the machine has cores, it is
pinned to the first cores and everything else (load generators, backends, sink) to the rest.
Left to the kernel, where the load generator's threads land decides the result: a wrk thread
woken onto the proxy's core preempts it once per response (traced with `perf sched`: ballast
was preempted 5,000 times a second by wrk on one run, HAProxy 1,000 on the next, for no reason
of their own). At all cores nothing is pinned.

wrk runs one thread per core the load may use: one at one worker thread, where the load has a
core of its own, and all at all cores. Two wrk threads on one core gave no more requests (a:
76.8k rps with one, 77.0k with two, behind ballast) but took turns on it with each other and
with the NGINX backend, and those turns set the p99 (`wrk_us`, `epoll_wait` per request and
wrk's latency spread in bench/RESULTS.md, step 39).
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BALLAST = os.path.join(ROOT, "target", "release", "ballast")
OUT = os.path.join(ROOT, "bench", "out")
HTTP, HTTPS, TCP, BULK = 18080, 18443, 18090, 18091
BACKENDS = [18081, 18082, 18083]
SINK = 18095
QUICK = "--quick" in sys.argv
DURATION = 3 if QUICK else 5
# Seconds of unmeasured load before each wrk run.
WARM_UP = 1
# BENCH_ROUNDS=6 runs more rounds (medians tighten; a run takes longer).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 1 if QUICK else 3))
# 10,000, unless the open-file limit (which every proxy needs about two of per connection)
# cannot allow it.
_HARD_FDS = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
IDLE_CONNECTIONS = 2000 if QUICK else min(10000, _HARD_FDS // 2 - 200)
BULK_BYTES = (256 if QUICK else 1024) * 1024 * 1024
CORES = os.cpu_count() or 1


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_port_free(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    return False


# Every core this run may use, as found at its start.
PINNED_FROM = sorted(os.sched_getaffinity(0))


def placement(threads):
    """(the proxy's cores, everything else's cores) for a run at `threads` worker threads, or
    None when nothing is pinned."""
    if threads >= len(PINNED_FROM):
        return None
    return set(PINNED_FROM[:threads]), set(PINNED_FROM[threads:])


def pin(pids, cpus):
    """Moves every thread of `pids` (and their children) onto `cpus`."""
    for pid in pids:
        for p in tree_pids(pid):
            try:
                for tid in os.listdir(f"/proc/{p}/task"):
                    os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass


def tree_pids(pid):
    """The process and its children (NGINX workers)."""
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    return pids


def cpu_seconds(pid):
    """CPU time (user and system) the process and its children have spent, in seconds."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def memory_kib(pid, field):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- configs

def certificate(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench.test",
         "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    combined = os.path.join(work, "combined.pem")
    with open(combined, "w") as out:
        out.write(open(cert).read() + open(key).read())
    return cert, key, combined


def ballast_config(work, threads, cert, key, shift=0):
    targets = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in BACKENDS)
    path = os.path.join(work, f"ballast{shift or ''}.toml")
    with open(path, "w") as f:
        f.write(f"""
[runtime]
worker_threads = {threads}

[[certificates]]
name = "bench"
cert = "{cert}"
key = "{key}"

[[listeners]]
name = "http"
protocol = "http"
bind = "127.0.0.1:{HTTP + shift}"
default_action = {{ type = "forward", target_group = "web" }}

[[listeners]]
name = "https"
protocol = "https"
bind = "127.0.0.1:{HTTPS + shift}"
certificates = ["bench"]
default_action = {{ type = "forward", target_group = "web" }}

[[listeners]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:{TCP + shift}"
default_action = {{ type = "forward", target_group = "tcpweb" }}

[[listeners]]
name = "bulk"
protocol = "tcp"
bind = "127.0.0.1:{BULK + shift}"
default_action = {{ type = "forward", target_group = "bulk" }}

[[target_groups]]
name = "web"
targets = [{targets}]

[[target_groups]]
name = "tcpweb"
protocol = "tcp"
targets = [{targets}]

[[target_groups]]
name = "bulk"
protocol = "tcp"
targets = [{{ address = "127.0.0.1:{SINK}" }}]
""")
    return [BALLAST, "run", "-c", path], {"BALLAST_LOG": "error"}


def haproxy_config(work, threads, combined, shift=0):
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(BACKENDS))
    path = os.path.join(work, f"haproxy{shift or ''}.cfg")
    with open(path, "w") as f:
        f.write(f"""
global
    nbthread {threads}
    maxconn {IDLE_CONNECTIONS + 100}
    tune.ssl.default-dh-param 2048

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option http-keep-alive
    option forwardfor

# ballast adds ELB's three X-Forwarded-* fields to every request; each proxy here does the
# same, so that the backend parses the same request behind each.
frontend http
    bind 127.0.0.1:{HTTP + shift}
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend web

frontend https
    bind 127.0.0.1:{HTTPS + shift} ssl crt {combined} alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend web

backend web
    balance roundrobin
{servers}

frontend tcp
    mode tcp
    bind 127.0.0.1:{TCP + shift}
    default_backend tcpweb

backend tcpweb
    mode tcp
    balance roundrobin
{servers}

frontend bulk
    mode tcp
    bind 127.0.0.1:{BULK + shift}
    default_backend bulk

backend bulk
    mode tcp
    server sink 127.0.0.1:{SINK}
""")
    return ["haproxy", "-db", "-f", path], {}


def nginx_config(work, threads, cert, key, shift=0):
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in BACKENDS)
    path = os.path.join(work, f"nginx{shift or ''}.conf")
    with open(path, "w") as f:
        f.write(f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes {threads};
worker_rlimit_nofile 65536;
pid {work}/nginx{shift or ''}.pid;
error_log {work}/nginx-error.log error;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    upstream web {{
{servers}
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{HTTP + shift};
        listen 127.0.0.1:{HTTPS + shift} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache off;
        ssl_session_tickets off;
        keepalive_requests 10000000;
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
}}
stream {{
    upstream tcpweb {{
{servers}
    }}
    proxy_half_close on;
    server {{ listen 127.0.0.1:{TCP + shift}; proxy_pass tcpweb; }}
    server {{ listen 127.0.0.1:{BULK + shift}; proxy_pass 127.0.0.1:{SINK}; }}
}}
""")
    return ["nginx", "-c", path, "-p", work], {}


def backend_config(work):
    path = os.path.join(work, "backends.conf")
    listens = "\n".join(f"        listen 127.0.0.1:{p} reuseport;" for p in BACKENDS)
    with open(path, "w") as f:
        f.write(f"""
daemon off;
worker_processes 1;
pid {work}/backends.pid;
error_log {work}/backends-error.log error;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    server {{
{listens}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    return ["nginx", "-c", path, "-p", work]


# ---------------------------------------------------------------- load

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_latency(text, pct):
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def wrk(url, connections=64, close=False):
    # One wrk thread per core the load may use (this process's, inherited): two threads on
    # the one load core of a one-thread run add no load, only turns between them, and those
    # turns made the p99 (module doc).
    threads = max(1, len(os.sched_getaffinity(0)))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    # A second of the same load first, not counted (as h2load's --warm-up-time for d): each
    # proxy is a fresh process, and each run follows a different workload. Without it, the
    # first proxy of a run, right after the 1 GiB direct transfer, had a p99 on a 1.3-1.6x
    # its own in later rounds (three runs of the ninth and tenth sessions).
    subprocess.run(cmd + ["-d", f"{WARM_UP}s", url], capture_output=True, timeout=WARM_UP + 60)
    out = subprocess.run(cmd + ["-d", f"{DURATION}s", url], capture_output=True, text=True,
                         timeout=DURATION + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": parse_latency(out, 50),
        "p99": parse_latency(out, 99),
        "errors": int(errors.group(1)) if errors else 0,
    }


def h2load(url):
    cmd = ["h2load", "-c", "10", "-m", "100", "-D", str(DURATION), "--warm-up-time=1", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 60).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": float(mean.group(1)) * UNITS[mean.group(2)] if mean else None,  # h2load gives the mean
        "p99": None,
        "errors": 0,
    }


def sink_server():
    """A TCP sink on SINK: reads a connection to its end, then answers with the byte count."""
    code = f"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {SINK})); s.listen(128)
def serve(c):
    buf = bytearray(1 << 20); total = 0
    while True:
        n = c.recv_into(buf)
        if not n: break
        total += n
    c.sendall(str(total).encode()); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
    return subprocess.Popen([sys.executable, "-c", code])


def bulk_transfer(port):
    chunk = b"x" * (1 << 20)
    started = time.time()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(BULK_BYTES // len(chunk)):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(64)
    elapsed = time.time() - started
    ok = answer.decode(errors="replace").strip() == str(BULK_BYTES)
    return {"rps": (BULK_BYTES / elapsed / 1e6) if ok else 0.0, "p50": elapsed * 1000, "p99": None,
            "errors": 0 if ok else 1}


async def hold_idle(port, n):
    conns = []
    sem = asyncio.Semaphore(500)

    async def one():
        async with sem:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
                await w.drain()
                await asyncio.wait_for(r.readuntil(b"ok\n"), 10)
                conns.append(w)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass
    await asyncio.gather(*(one() for _ in range(n)))
    return conns


def idle_memory(proxy_pid, port):
    before = memory_kib(proxy_pid, "VmRSS")
    loop = asyncio.new_event_loop()
    conns = loop.run_until_complete(hold_idle(port, IDLE_CONNECTIONS))
    # Idle means idle for a while: proxies may release per-connection state after a pause.
    time.sleep(3.0)
    after = memory_kib(proxy_pid, "VmRSS")
    for w in conns:
        w.close()
    loop.run_until_complete(asyncio.sleep(0.5))
    loop.close()
    held = len(conns)
    per_conn = (after - before) * 1024 / held if held else 0
    return {"rps": per_conn, "p50": None, "p99": None, "errors": IDLE_CONNECTIONS - held, "held": held,
            "kib": after - before}


WORKLOADS = [
    ("a", "HTTP/1.1 keep-alive, 64 conns", lambda pid: wrk(f"http://127.0.0.1:{HTTP}/")),
    ("b", "new connection per request", lambda pid: wrk(f"http://127.0.0.1:{HTTP}/", close=True)),
    ("c1", "HTTPS handshakes (no resumption)", lambda pid: wrk(f"https://127.0.0.1:{HTTPS}/", close=True)),
    ("c2", "HTTPS keep-alive", lambda pid: wrk(f"https://127.0.0.1:{HTTPS}/")),
    ("d", "HTTP/2, 100 streams x 10 conns", lambda pid: h2load(f"https://127.0.0.1:{HTTPS}/")),
    ("e1", "L4 TCP 1 GiB transfer (MB/s)", lambda pid: bulk_transfer(BULK)),
    ("e2", "L4 TCP new connections", lambda pid: wrk(f"http://127.0.0.1:{TCP}/", close=True)),
    ("f", f"{IDLE_CONNECTIONS} idle conns (bytes/conn)", lambda pid: idle_memory(pid, HTTP)),
]

# BENCH_ONLY=a,f runs only those workloads.
if os.environ.get("BENCH_ONLY"):
    _only = set(os.environ["BENCH_ONLY"].split(","))
    WORKLOADS = [w for w in WORKLOADS if w[0] in _only]

DIRECT = {
    "a": lambda: wrk(f"http://127.0.0.1:{BACKENDS[0]}/"),
    "b": lambda: wrk(f"http://127.0.0.1:{BACKENDS[0]}/", close=True),
    "e1": lambda: bulk_transfer(SINK),
}


def start(cmd, env, cpus=None):
    for port in (HTTP, HTTPS, TCP, BULK):
        wait_port_free(port)
    if cpus is not None:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] + cmd
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in (HTTP, HTTPS, TCP, BULK):
        if not wait_port(port):
            proc.kill()
            raise RuntimeError(f"{cmd[0]} did not open port {port}")
    time.sleep(0.5)
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def main():
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ballast-bench-")
    cert, key, combined = certificate(work)
    backends = subprocess.Popen(backend_config(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = sink_server()
    for port in BACKENDS + [SINK]:
        wait_port(port)
    results = {}
    try:
        for threads in sorted({1, CORES}):
            placed = placement(threads)
            proxy_cpus, load_cpus = placed if placed else (None, set(PINNED_FROM))
            # This process (and so wrk, h2load and the in-process clients) and the backends.
            os.sched_setaffinity(0, load_cpus)
            pin([backends.pid, sink.pid], load_cpus)
            proxies = {
                "ballast": ballast_config(work, threads, cert, key),
                "haproxy": haproxy_config(work, threads, combined),
                "nginx": nginx_config(work, threads, cert, key),
            }
            for key_, run in DIRECT.items():
                if key_ not in {w[0] for w in WORKLOADS}:
                    continue
                results.setdefault((threads, key_, "direct"), []).append(run())
            names = list(proxies)
            for rnd in range(ROUNDS):
                # Each workload runs on every proxy in turn, one right after the other, on a
                # fresh process: this machine's speed drifts by up to a fifth within a minute,
                # so runs compared are kept close in time. The order turns each round.
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for key_, _, run in WORKLOADS:
                    for name in order:
                        cmd, env = proxies[name]
                        proc = start(cmd, env, proxy_cpus)
                        try:
                            r = run(proc.pid)
                            r["peak_kib"] = memory_kib(proc.pid, "VmHWM")
                        finally:
                            stop(proc)
                        results.setdefault((threads, key_, name), []).append(r)
                        print(f"threads={threads} round={rnd + 1} {name:8} {key_:3} "
                              f"{fmt(r['rps'])} p50={fmt(r['p50'], 2)} p99={fmt(r['p99'], 2)} "
                              f"peak={r['peak_kib']} KiB errors={r['errors']}", flush=True)
    finally:
        backends.terminate()
        sink.terminate()
        shutil.rmtree(work, ignore_errors=True)

    lines = report(results)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(OUT, "latest.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT, "latest.json"), "w") as f:
        json.dump({f"{t}/{k}/{n}": v for (t, k, n), v in results.items()}, f, indent=1)


def median(runs, field):
    values = [r[field] for r in runs if r.get(field) is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return None if a is None or not b else a / b


def paired(ours, theirs, field):
    """The median over rounds of `ours`/`theirs` within each round: the two ran a minute apart at
    most, so the machine's drift (up to a fifth within a minute here) mostly cancels."""
    ratios = [ratio(a.get(field), b.get(field)) for a, b in zip(ours or [], theirs or [])]
    ratios = [r for r in ratios if r is not None]
    return statistics.median(ratios) if ratios else None


def report(results):
    lines = [
        f"Machine: {CORES} cores; {time.strftime('%Y-%m-%d')}; rounds: {ROUNDS}; duration {DURATION}s per run.",
        "Below all cores, the proxy is pinned to its first cores and the load and backends to the rest.",
        "rps is requests/s (e1: MB/s; f: bytes held per idle connection, lower is better); "
        "p50/p99 in ms (d: mean); peak = VmHWM of the proxy (all its processes) in MiB.",
        "",
    ]
    for threads in sorted({1, CORES}):
        lines += [
            f"### {threads} worker thread{'s' if threads > 1 else ''}",
            "",
            "| workload | proxy | rps | p50 | p99 | peak MiB | rps vs HAProxy | rps vs NGINX | p99 vs HAProxy "
            "| rps vs HAProxy, per round | p99 vs HAProxy, per round |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key_, label, _ in WORKLOADS:
            med = {}
            for name in ("ballast", "haproxy", "nginx", "direct"):
                runs = results.get((threads, key_, name))
                if not runs:
                    continue
                med[name] = {f: median(runs, f) for f in ("rps", "p50", "p99", "peak_kib")}
            for name, m in med.items():
                cells = [f"{key_} {label}" if name == "ballast" else "", name, fmt(m["rps"]), fmt(m["p50"], 2),
                         fmt(m["p99"], 2), fmt((m["peak_kib"] or 0) / 1024) if m["peak_kib"] else "-"]
                if name == "ballast":
                    h, n = med.get("haproxy", {}), med.get("nginx", {})
                    ours, theirs = results.get((threads, key_, "ballast")), results.get((threads, key_, "haproxy"))
                    cells += [fmt(ratio(m["rps"], h.get("rps")), 2), fmt(ratio(m["rps"], n.get("rps")), 2),
                              fmt(ratio(m["p99"], h.get("p99")), 2), fmt(paired(ours, theirs, "rps"), 2),
                              fmt(paired(ours, theirs, "p99"), 2)]
                else:
                    cells += ["", "", "", "", ""]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
