#!/usr/bin/env python3
"""Throughput and latency of Ellipsis through `ell bench`, beside Redis, in one run.

Starts real `ell-node` processes on loopback (one node with one group, then two nodes in two
groups), drives them with `ell bench` (closed loop over the client library), then runs
`redis-benchmark` against Debian's `redis-server` with AOF `everysec` using the same value size
and concurrency. Prints a Markdown table; BENCHMARKS.md records its output.

Usage: python3 scripts/bench_cluster.py [--duration-s 10] [--sizes 1024,1048576]
Needs: cargo, redis-server and redis-benchmark (apt-get install redis-server).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    """Wait for a listener: the node or Redis is up when it accepts a connection."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def wait_routes(http_port: int, nodes: int, timeout_s: float = 20.0) -> None:
    """Wait until the node at `http_port` knows `nodes` nodes (its /stats/routes)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{http_port}/stats/routes"
            with urllib.request.urlopen(url, timeout=1) as r:
                if len(json.load(r).get("nodes", [])) >= nodes:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"node with HTTP port {http_port} did not learn {nodes} nodes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`groups` ell-node processes, node i holding one backend of group i + 1."""

    def __init__(self, groups: int, sync: str):
        self.dir = Path(tempfile.mkdtemp(prefix="ell-bench-"))
        self.procs = []
        self.https = []
        self.ports = [free_port() for _ in range(groups)]
        for i, port in enumerate(self.ports):
            http = free_port()
            remotes = [f"127.0.0.1:{self.ports[0]}"] if i > 0 else []
            cfg = self.dir / f"node{i}.toml"
            cfg.write_text(
                f'listen = ["127.0.0.1:{port}"]\n'
                f'remotes = {json.dumps(remotes)}\n'
                f'http_listen = "127.0.0.1:{http}"\n'
                'log_level = "warn"\n'
                "[[backend]]\n"
                f"id = {i + 1}\n"
                f"group = {i + 1}\n"
                f'dir = "{self.dir / f"backend{i}"}"\n'
                f'sync = "{sync}"\n'
                "min_free_space_bytes = 0\n"
            )
            log = open(self.dir / f"node{i}.log", "w")
            self.procs.append(
                subprocess.Popen(
                    [str(target_dir() / "ell-node"), "--config", str(cfg)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_port(port)
            self.https.append(http)
        # A bound port is not a joined cluster: wait until every node's route table names
        # every node, or the first client may fetch routes that lack a group.
        for http in self.https:
            wait_routes(http, groups)

    def remotes(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def ell_bench(remotes: str, groups: int, size: int, conc: int, reads: float, secs: float,
              keys: int, prefill: bool) -> dict:
    cmd = [
        str(target_dir() / "ell"), "--remote", remotes, "--json",
        "--groups", ",".join(str(g) for g in range(1, groups + 1)),
        "--checker", "all", "--timeout-ms", "30000",
        "bench", "--keys", str(keys), "--value-bytes", str(size),
        "--concurrency", str(conc), "--read-ratio", str(reads), "--duration-s", str(secs),
    ]
    if prefill:
        cmd.append("--prefill")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    if r["errors"] or r["not_found"]:
        raise SystemExit(f"ell bench saw errors: {r}")
    side = r["reads"] if reads > 0 else r["writes"]
    return {"ops": r["ops_per_s"], "p50": side["p50_us"], "p99": side["p99_us"]}


def redis_bench(size: int, conc: int, requests: int, keys: int) -> dict:
    rdir = Path(tempfile.mkdtemp(prefix="ell-bench-redis-"))
    port = free_port()
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(rdir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "set,get", "-d", str(size),
             "-c", str(conc), "-n", str(requests), "-r", str(keys), "--csv"],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        shutil.rmtree(rdir, ignore_errors=True)
    res = {}
    for line in out.splitlines():
        f = [c.strip('"') for c in line.split(",")]
        if f[0] in ("SET", "GET"):
            # test, rps, avg, min, p50, p95, p99, max (ms)
            res[f[0]] = {"ops": float(f[1]), "p50": float(f[4]) * 1000, "p99": float(f[6]) * 1000}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--sizes", default="1024,1048576")
    ap.add_argument("--sync", default="1s", help="ell-node sync policy (1s ~ AOF everysec)")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install redis-server")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "ellipsis-node", "-p",
                        "ellipsis-console"], check=True, cwd=ROOT)

    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        conc = 50 if size <= 64 * 1024 else 8
        keys = 10_000 if size <= 64 * 1024 else 500
        for groups in (1, 2):
            c = Cluster(groups, a.sync)
            try:
                w = ell_bench(c.remotes(), groups, size, conc, 0.0, a.duration_s, keys, False)
                r = ell_bench(c.remotes(), groups, size, conc, 1.0, a.duration_s, keys, True)
            finally:
                c.stop()
            label = "1 node, 1 group" if groups == 1 else "2 nodes, 2 groups"
            rows.append((size, conc, f"Ellipsis, {label}", w, r))
        # Enough requests for a run of a few seconds at the rates seen here.
        requests = 300_000 if size <= 64 * 1024 else 3_000
        rb = redis_bench(size, conc, requests, keys)
        rows.append((size, conc, "Redis, AOF everysec", rb["SET"], rb["GET"]))

    mb = lambda ops, size: ops * size / 1e6  # noqa: E731
    print(f"duration {a.duration_s} s per Ellipsis run, ell-node sync = {a.sync}, "
          f"writes to every group with checker all\n")
    print("| value | clients | system | writes/s | write MB/s | write p50/p99 µs "
          "| reads/s | read MB/s | read p50/p99 µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, conc, name, w, r in rows:
        v = f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        print(f"| {v} | {conc} | {name} | {w['ops']:.0f} | {mb(w['ops'], size):.1f} | "
              f"{w['p50']:.0f} / {w['p99']:.0f} | {r['ops']:.0f} | {mb(r['ops'], size):.1f} | "
              f"{r['p50']:.0f} / {r['p99']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
