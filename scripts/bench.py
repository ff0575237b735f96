"""The benchmark suite behind scripts/bench: runs the cases against this service and, with
--against, another server, in one run, and writes a table of medians with ratios.

Called by scripts/bench, which builds the binaries and installs what is missing; run that.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVER_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SUITES = ("ingest", "sinks", "paced", "idle", "health", "startup", "streaming", "slowloris")
PACED = (1_000, 3_000, 10_000)
IDLE = (1_000, 10_000, 19_000)
# Enough loopback source addresses that 19,000 connections never run out of ephemeral ports.
SOURCES = "8"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(port, process, timeout=10.0):
    """Seconds from now until /health answers 200; fails if the process exits first."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process is not None and process.poll() is not None:
            sys.exit(f"error: the server exited with {process.returncode} before answering /health")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.002)
    sys.exit(f"error: nothing answered /health on port {port} within {timeout:.0f} s")


def cpu_ticks(pid):
    """User plus system CPU of a process and all its threads, in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def listener_pid(port):
    """The process listening on a loopback TCP port, found through ss (needs root for others)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    found = re.search(r"pid=(\d+)", out)
    return int(found.group(1)) if found else None


class Redis:
    """A private redis-server for the Redis sink cases, on the load core (the server's core
    stays the service's alone). `aof`: persist as production Redis is advised to (AOF, fsync
    every second), else keep everything in memory only."""

    def __init__(self, work, aof=True):
        self.port = free_port()
        self.dir = os.path.join(work, f"redis-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        self.process = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        started = time.perf_counter()
        while time.perf_counter() - started < 10:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(7) == b"+PONG\r\n":
                        return
            except OSError:
                time.sleep(0.01)
        sys.exit("error: redis-server did not start")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)


class Target:
    """A server to measure: started fresh for every case, or one already running (--against URL)."""

    def __init__(self, name, command=None, env=None, cwd=None, url=None):
        self.name, self.command, self.env, self.cwd, self.url = name, command, env or {}, cwd, url
        self.process = None
        self.pid = None
        self.port = None

    @property
    def ours(self):
        return self.name == "aimcs"

    def start(self, work, **settings):
        """Starts the server (ours with `settings` as APP_ variables) pinned to the server core."""
        if self.url:
            self.port = int(re.match(r"\w+://[^:/]+:(\d+)", self.url).group(1))
            self.pid = listener_pid(self.port)
            if self.pid:
                subprocess.run(["taskset", "-apc", SERVER_CPU, str(self.pid)], capture_output=True)
            return 0.0
        self.port = free_port()
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
        env.update(self.env)
        env.update({"PORT": str(self.port), "HOST": "127.0.0.1", "APP_SERVER__HOST": "127.0.0.1"})
        if self.ours:
            recordings = os.path.join(work, f"recordings-{self.port}")
            os.makedirs(recordings, exist_ok=True)
            env.update({
                "APP_LOG__LEVEL": "warn",
                "APP_AUDIO__FILE__DIR": recordings,
                "APP_AUDIO__SINK": "null",
                # What the suites measure is how fast the service goes, not its limiter; and
                # the largest cases need room for 19,000 sockets.
                "APP_WS__MAX_MESSAGES_PER_SECOND": "0",
                "APP_WS__MAX_CONNECTIONS": "19500",
                "APP_SERVER__MAX_CONNECTIONS": "19800",
            })
            env.update({f"APP_{key.upper()}": str(value) for key, value in settings.items()})
        log = open(os.path.join(work, f"{self.name}-{self.port}.log"), "w")
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *self.command], env=env, cwd=self.cwd,
            stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        return wait_for_health(self.port, self.process)

    def stop(self):
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws/audio"


def loadgen(args, target, *options, timeout, redis=None):
    """Runs the load generator on the load core; its JSON report plus the server's CPU (and
    Redis's, when there is one)."""
    before = cpu_ticks(target.pid) if target.pid else None
    redis_before = cpu_ticks(redis.process.pid) if redis else None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        ["taskset", "-c", LOAD_CPU, args.loadgen, "--url", target.ws_url(), "--json", *options],
        capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"error: the load generator printed no report: {done.stderr.strip()}")
    if before is not None:
        server_cpu = (cpu_ticks(target.pid) - before) / CLK_TCK
        report["serverCpuPercent"] = 100 * server_cpu / elapsed
        if report["messages"]:
            report["serverCpuUsPerMessage"] = server_cpu * 1e6 / report["messages"]
    report["loadCpuPercent"] = 100 * load_cpu / elapsed
    report["wallSeconds"] = elapsed
    if redis:
        redis_cpu = (cpu_ticks(redis.process.pid) - redis_before) / CLK_TCK
        report["redisCpuPercent"] = 100 * redis_cpu / elapsed
        if report["messages"]:
            report["redisCpuUsPerMessage"] = redis_cpu * 1e6 / report["messages"]
    return report


def start_with_sink(target, work, sink, **settings):
    """Starts the target with `sink`; for `redis` (AOF) or `redis-memory` (no persistence), a
    private Redis too, returned."""
    if not sink.startswith("redis"):
        target.start(work, audio__sink=sink, **settings)
        return None
    redis = Redis(work, aof=sink == "redis")
    target.start(work, audio__sink="redis", store="redis", redis__url=redis.url, **settings)
    return redis


def case_closed(args, target, work, connections, sink="null", frames="base64", ours_only=False):
    if ours_only and not target.ours:
        return {}
    redis = start_with_sink(target, work, sink)
    try:
        common = ["--connections", str(connections), "--frames", frames]
        loadgen(args, target, *common, "--duration", "2", timeout=60, redis=redis)
        report = loadgen(args, target, *common, "--duration", str(args.duration), timeout=120, redis=redis)
    finally:
        target.stop()
        if redis:
            redis.stop()
    row = {
        "messages/s": report["messagesPerSecond"],
        "server µs/msg": report.get("serverCpuUsPerMessage"),
        "ack p50 ms": report["latencyMs"]["p50"],
        "ack p99 ms": report["latencyMs"]["p99"],
        "errors": report["errors"],
        "failed": report["failedConnections"],
    }
    if redis:
        row["redis µs/msg"] = report.get("redisCpuUsPerMessage")
        row["redis CPU %"] = report.get("redisCpuPercent")
    return row


def case_paced(args, target, work, callers, sink="null", ours_only=False):
    if ours_only and not target.ours:
        return {}
    redis = start_with_sink(target, work, sink)
    ramp = max(1, callers // 2_000)
    try:
        report = loadgen(
            args, target, "--mode", "paced", "--interval-ms", "100", "--connections", str(callers),
            "--ramp-up", str(ramp), "--duration", str(args.duration), "--sources", SOURCES,
            timeout=ramp + args.duration + 120, redis=redis)
    finally:
        target.stop()
        if redis:
            redis.stop()
    extra = {"redis CPU %": report.get("redisCpuPercent")} if redis else {}
    return extra | {
        "messages/s": report["messagesPerSecond"],
        "ack p50 ms": report["latencyMs"]["p50"],
        "ack p99 ms": report["latencyMs"]["p99"],
        "ack p99.9 ms": report["latencyMs"]["p999"],
        "ack max ms": report["latencyMs"]["max"],
        "server CPU %": report.get("serverCpuPercent"),
        "load generator CPU %": report["loadCpuPercent"],
        "errors": report["errors"],
        "failed": report["failedConnections"],
        "first failure": report.get("firstFailure"),
    }


def case_idle(args, target, work, connections):
    target.start(work)
    ramp = max(1, connections // 2_000)
    try:
        report = loadgen(
            args, target, "--mode", "idle", "--connections", str(connections), "--ramp-up", str(ramp),
            "--duration", "6", "--sources", SOURCES, "--server-pid", str(target.pid),
            timeout=ramp + 120)
    finally:
        target.stop()
    return {
        "KiB/connection": report["serverRssKiBPerConnection"],
        "failed": report["failedConnections"],
        "first failure": report.get("firstFailure"),
    }


def case_health(args, target, work):
    target.start(work)
    try:
        out = subprocess.run(
            ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c64", f"-d{args.duration}s", "--latency",
             f"http://127.0.0.1:{target.port}/health"],
            capture_output=True, text=True, timeout=args.duration + 60).stdout
    finally:
        target.stop()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "requests/s": float(rate.group(1)) if rate else 0.0,
        "p99 ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
        "non-2xx": int(errors.group(1)) if errors else 0,
    }


def case_startup(args, target, work):
    """From exec to the first /health answered, as a load balancer's first probe sees it."""
    if target.url:
        return {"ms to first answer": None}
    seconds = target.start(work)
    target.stop()
    return {"ms to first answer": seconds * 1000}


def case_streaming(args, target, work):
    """Peak resident memory per connection while 200 connections stream 64 KB binary frames."""
    if not target.ours:
        return {}
    target.start(work, audio__sink="file", ws__max_message_bytes=1 << 20)
    idle = rss_kib(target.pid)
    peak = idle
    try:
        load = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, args.loadgen, "--url", target.ws_url(), "--json",
             "--connections", "200", "--duration", str(args.duration), "--frames", "binary",
             "--chunk-bytes", "65536"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while load.poll() is None:
            peak = max(peak, rss_kib(target.pid))
            time.sleep(0.1)
    finally:
        target.stop()
    return {"peak KiB/connection": (peak - idle) / 200}


def case_slowloris(args, target, work, sockets=1_000):
    """Memory per socket hanging mid-headers, and /health latency while they hang."""
    if not target.ours:
        return {}
    target.start(work)

    def health_ms(rounds=200):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", target.port), timeout=5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(4096):
                    pass
            times.append((time.perf_counter() - started) * 1000)
        return times

    try:
        alone = health_ms()
        before = rss_kib(target.pid)
        hanging = []
        for _ in range(sockets):
            s = socket.create_connection(("127.0.0.1", target.port))
            s.sendall(b"GET /health HTTP/1.1\r\nHo")
            hanging.append(s)
        time.sleep(0.5)
        held = rss_kib(target.pid)
        loaded = health_ms()
        for s in hanging:
            s.close()
    finally:
        target.stop()
    return {
        "KiB/socket": (held - before) / sockets,
        "/health p50 ms alone": statistics.median(alone),
        "/health p50 ms while they hang": statistics.median(loaded),
        "/health p99 ms while they hang": sorted(loaded)[int(len(loaded) * 0.99)],
    }


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def cases(suites):
    """(suite, label, function, arguments) for every case of the chosen suites, in order."""
    for suite in suites:
        if suite == "ingest":
            for connections in (1, 16):
                yield suite, f"closed loop, {connections} connection{'s' * (connections > 1)}, base64", case_closed, (connections,)
        elif suite == "sinks":
            for sink in ("null", "file", "redis"):
                yield suite, f"closed loop, 16 connections, {sink} sink", case_closed, (16, sink, "base64", True)
            yield suite, "closed loop, 16 connections, binary frames, file sink", case_closed, (16, "file", "binary", True)
            yield suite, "closed loop, 16 connections, binary frames, redis sink", case_closed, (16, "redis", "binary", True)
            for callers in (1_000, 2_000):
                yield suite, f"{callers:,} paced callers, redis sink and store, AOF", case_paced, (callers, "redis", True)
                yield suite, f"{callers:,} paced callers, redis sink and store, in memory", case_paced, (callers, "redis-memory", True)
        elif suite == "paced":
            for callers in PACED:
                yield suite, f"{callers:,} paced callers, a chunk every 100 ms", case_paced, (callers,)
        elif suite == "idle":
            for connections in IDLE:
                yield suite, f"{connections:,} idle connections", case_idle, (connections,)
        elif suite == "health":
            yield suite, "GET /health, 64 connections (wrk)", case_health, ()
        elif suite == "startup":
            yield suite, "start-up to first /health answer", case_startup, ()
        elif suite == "streaming":
            yield suite, "200 connections streaming 64 KB frames, file sink", case_streaming, ()
        elif suite == "slowloris":
            yield suite, "1,000 sockets hanging mid-headers", case_slowloris, ()


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 10:
        return f"{value:,.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


# Which way is better, for the ratio column: higher for rates, lower for the rest.
HIGHER_IS_BETTER = ("messages/s", "requests/s")


def ratio(key, ours, theirs):
    if ours is None or theirs is None or not ours or not theirs:
        return None
    return ours / theirs if key in HIGHER_IS_BETTER else theirs / ours


def main():
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--against", help="URL of another server, or 'node' for the original")
    parser.add_argument("--node-dir", help=argparse.SUPPRESS)
    parser.add_argument("--server", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if any case of this service had errors or failed connections")
    parser.add_argument("--max-idle-kib", type=float,
                        help="with --check: exit 1 if an idle WebSocket of this service holds more")
    parser.add_argument("suites", nargs="*")
    args = parser.parse_args()
    suites = args.suites or list(SUITES)
    for suite in suites:
        if suite not in SUITES:
            sys.exit(f"error: unknown suite {suite!r}: choose from {', '.join(SUITES)}")

    targets = [Target("aimcs", [os.path.abspath(args.server)])]
    if args.against == "node":
        targets.append(Target("original", ["node", "server.js"], cwd=args.node_dir,
                              env={"NODE_ENV": "production"}))
    elif args.against:
        targets.append(Target("other", url=args.against))

    results = {}
    work = tempfile.mkdtemp(prefix="aimcs-bench-")
    try:
        for run in range(1, args.runs + 1):
            for suite, label, function, arguments in cases(suites):
                for target in targets:
                    row = function(args, target, work, *arguments)
                    if not row:
                        continue
                    results.setdefault((suite, label), {}).setdefault(target.name, []).append(row)
                    shown = ", ".join(f"{k} {fmt(v)}" for k, v in row.items() if v is not None)
                    print(f"run {run}/{args.runs} {target.name:8} {label}: {shown}", flush=True)
    finally:
        for target in targets:
            target.stop()
        shutil.rmtree(work, ignore_errors=True)

    write_report(args, targets, results)
    if args.check:
        bad = [f"{label}: {key} {row[key]}" for (_, label), by_target in results.items()
               for row in by_target.get("aimcs", []) for key in ("errors", "failed", "non-2xx")
               if row.get(key)]
        if args.max_idle_kib is not None:
            bad += [f"{label}: {row['KiB/connection']:.2f} KiB per idle connection, over {args.max_idle_kib}"
                    for (suite, label), by_target in results.items() if suite == "idle"
                    for row in by_target.get("aimcs", [])
                    if (row.get("KiB/connection") or 0) > args.max_idle_kib]
        if bad:
            sys.exit("error: this service failed cases:\n  " + "\n  ".join(bad))


def write_report(args, targets, results):
    other = targets[1].name if len(targets) > 1 else None
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"# Benchmark {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, {platform.system()} {platform.release()}",
        f"- commit {commit or 'unknown'}; release binary {os.path.getsize(args.server) / 2**20:.1f} MiB",
        f"- server pinned to CPU {SERVER_CPU}, load generator (one thread) and wrk to CPU {LOAD_CPU}; "
        f"{args.runs} runs of every case, {args.duration} s each; figures are medians over the runs",
        f"- command: `scripts/bench{' --against ' + args.against if args.against else ''}"
        f"{' --runs ' + str(args.runs) if args.runs != 3 else ''}"
        f"{' --duration ' + str(args.duration) if args.duration != 10 else ''}"
        f"{' ' + ' '.join(args.suites) if args.suites else ''}`",
    ]
    if other:
        lines.append(f"- against: {other} ({args.against}); the ratio says how many times better this service is")
    lines.append("")
    current = None
    notes = []
    for (suite, label), by_target in results.items():
        if suite != current:
            current = suite
            lines += ["", f"## {suite}", ""]
            header = ["case", "figure", "aimcs"] + ([other, "ratio"] if other else [])
            lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        ours_rows = by_target.get("aimcs", [])
        keys = [k for k in (ours_rows[0] if ours_rows else {}) if k != "first failure"]
        for key in keys:
            ours = median(r.get(key) for r in ours_rows)
            cells = [label, key, fmt(ours)]
            if other:
                theirs_rows = by_target.get(other, [])
                theirs = median(r.get(key) for r in theirs_rows) if theirs_rows else None
                cells += [fmt(theirs), f"{ratio(key, ours, theirs):.1f}×" if ratio(key, ours, theirs) else "–"]
            if key in ("errors", "failed", "non-2xx"):
                cells[2] = fmt(max(r.get(key) or 0 for r in ours_rows))
                if other and by_target.get(other):
                    cells[3] = fmt(max(r.get(key) or 0 for r in by_target[other]))
                    cells[4] = "–"
            lines.append("| " + " | ".join(cells) + " |")
        for name, rows in by_target.items():
            failure = next((r["first failure"] for r in rows if r.get("first failure")), None)
            if failure:
                notes.append(f"- {name}, {label}: first failed connection: {failure}")
    lines += ["", "errors, failed and non-2xx are the worst run, not the median.", ""]
    lines += notes + [""] if notes else []
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as out:
        out.write(text)
    print()
    print(text)
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
