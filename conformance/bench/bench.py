#!/usr/bin/env python3
"""Throughput/latency of ec2d vs moto_server on signed EC2 Query requests.

    conformance/.venv/bin/python conformance/bench/bench.py [--duration 5] [--conns 8,32,64]

Starts ec2d (target/release/ec2d, or $EC2D_BIN) and moto_server (moto[server]
from the venv) on free loopback ports, seeds both with the same key pairs and
security groups (through boto3), then for DescribeSecurityGroups and
DescribeKeyPairs at each concurrency drives both servers with the same
requests and prints req/s, p50/p99 latency and the ec2d/moto ratio, plus ec2d's
idle RSS (VmRSS from /proc/PID/status, after start-up and seeding, before load).

Load generator: every request is SigV4-signed with botocore's SigV4Auth for
that server's Host at the start of each run (a run lasts seconds, well inside
the 15-minute signature window), and the signed bytes are replayed over
keep-alive HTTP/1.1 connections, one request in flight per connection, by
worker processes each running a selector loop over raw sockets -- no per-request
Python HTTP client or signing cost. The generator's own CPU use is printed so a
client-bound figure can be recognised (the machine's cores are shared by both
sides). All traffic stays on 127.0.0.1; every loop is bounded by time.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import harness  # noqa: E402

OPS = {
    "DescribeSecurityGroups": {"Action": "DescribeSecurityGroups", "Version": "2016-11-15"},
    "DescribeKeyPairs": {"Action": "DescribeKeyPairs", "Version": "2016-11-15"},
}


def signed_bytes(endpoint, params, region="us-east-1"):
    body = urllib.parse.urlencode(params).encode()
    host = urllib.parse.urlsplit(endpoint).netloc
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host}
    headers = harness.sign("POST", endpoint + "/", body, headers, region, "test", "test")
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "keep-alive"
    head = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


def _connect(host, port):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


def _worker(host, port, req, nconns, duration, warmup, out_q):
    """One process: nconns HTTP/1.1 connections, one request in flight each.

    Connections are kept alive; a server that answers `Connection: close`
    (moto's Werkzeug server does) is reconnected for the next request, and that
    connect time counts in its latency."""
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(nconns):
        st = {"sock": _connect(host, port), "buf": bytearray(), "t0": 0.0, "need": None, "close": False}
        conns.append(st)
        sel.register(st["sock"], selectors.EVENT_READ, st)
    lat, errors, count, reconnects = [], 0, 0, 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + duration
    for st in conns:
        st["t0"] = time.perf_counter()
        st["sock"].sendall(req)
    while time.perf_counter() < stop:
        for key, _ in sel.select(timeout=0.5):
            st = key.data
            try:
                chunk = st["sock"].recv(262144)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if st["need"] is None and not st["buf"]:
                    # closed between requests: reconnect and resend
                    sel.unregister(st["sock"])
                    st["sock"].close()
                    st["sock"] = _connect(host, port)
                    sel.register(st["sock"], selectors.EVENT_READ, st)
                    st["sock"].sendall(req)
                    reconnects += 1
                    continue
                raise RuntimeError("server closed a connection mid-response")
            buf = st["buf"]
            buf += chunk
            while True:
                if st["need"] is None:
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    head = bytes(buf[:i]).lower()
                    j = head.find(b"content-length:")
                    if j < 0:
                        raise RuntimeError("response without Content-Length: " + head[:200].decode())
                    k = head.find(b"\r\n", j)
                    clen = int(head[j + 15:k if k >= 0 else len(head)].strip())
                    st["status"] = int(head[9:12])
                    st["close"] = b"connection: close" in head or head.startswith(b"http/1.0")
                    st["need"] = i + 4 + clen
                if len(buf) < st["need"]:
                    break
                del buf[:st["need"]]
                st["need"] = None
                t1 = time.perf_counter()
                if st["t0"] >= measure_from and t1 <= stop:
                    lat.append(t1 - st["t0"])
                    count += 1
                    if st["status"] != 200:
                        errors += 1
                st["t0"] = t1
                if st["close"]:
                    sel.unregister(st["sock"])
                    st["sock"].close()
                    st["sock"] = _connect(host, port)
                    sel.register(st["sock"], selectors.EVENT_READ, st)
                    buf.clear()
                    reconnects += 1
                st["sock"].sendall(req)
                break
    cpu = time.process_time() - cpu0
    for st in conns:
        st["sock"].close()
    out_q.put((count, errors, lat, cpu, reconnects))


def run_load(endpoint, op, conns, duration, warmup, procs, server_pid=None):
    req = signed_bytes(endpoint, OPS[op])
    scpu0, t0 = (cpu_seconds(server_pid), time.perf_counter()) if server_pid else (None, None)
    u = urllib.parse.urlsplit(endpoint)
    q = mp.Queue()
    procs = max(1, min(procs, conns))
    per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    ps = [mp.Process(target=_worker, args=(u.hostname, u.port, req, n, duration, warmup, q)) for n in per]
    for p in ps:
        p.start()
    results = [q.get(timeout=duration + warmup + 120) for _ in ps]
    for p in ps:
        p.join()
    server_cpu = (cpu_seconds(server_pid) - scpu0) / (time.perf_counter() - t0) if server_pid else float("nan")
    count = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    cpu = sum(r[3] for r in results)
    reconnects = sum(r[4] for r in results)
    if not lat:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": errors,
                "client_cpu": cpu / duration, "reconnects": reconnects, "server_cpu": server_cpu}
    return {
        "rps": count / duration,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "errors": errors,
        "client_cpu": cpu / (duration + warmup),
        "reconnects": reconnects,
        "server_cpu": server_cpu,
    }


def cpu_seconds(pid):
    """utime+stime of a process (all threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def wait_http(url, path, timeout=30):
    import http.client

    u = urllib.parse.urlsplit(url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}{path} did not come up")


def seed(endpoint, n_keys, n_sgs):
    c = harness.client(endpoint, check=False)
    for i in range(n_keys):
        c.create_key_pair(KeyName=f"bench-key-{i}")
    vpc = c.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    for i in range(n_sgs):
        g = c.create_security_group(GroupName=f"bench-sg-{i}", Description="bench", VpcId=vpc)["GroupId"]
        c.authorize_security_group_ingress(GroupId=g, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    return (len(c.describe_security_groups()["SecurityGroups"]), len(c.describe_key_pairs()["KeyPairs"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--conns", default="8,32,64")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--keys", type=int, default=5)
    ap.add_argument("--sgs", type=int, default=5)
    ap.add_argument("--no-moto", action="store_true")
    a = ap.parse_args()
    conns = [int(x) for x in a.conns.split(",")]

    tmp = tempfile.mkdtemp(prefix="ec2d-bench-")
    ec2d = harness.Ec2d(data_dir=os.path.join(tmp, "data"), log_path=os.path.join(tmp, "ec2d.log"))
    os.makedirs(ec2d.data_dir)
    moto = None
    try:
        ec2d.start()
        servers = {"ec2d": ec2d.url}
        pids = {"ec2d": ec2d.proc.pid}
        if not a.no_moto:
            mport = harness.free_port()
            moto_bin = os.path.join(os.path.dirname(sys.executable), "moto_server")
            moto = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(mport)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers["moto"] = f"http://127.0.0.1:{mport}"
            pids["moto"] = moto.pid
            wait_http(servers["moto"], "/moto-api/")
        for name, url in servers.items():
            sgs, keys = seed(url, a.keys, a.sgs)
            print(f"{name:5s} at {url}: {sgs} security groups, {keys} key pairs (us-east-1)")
        time.sleep(1.0)
        idle = rss_kib(ec2d.proc.pid)
        print(f"ec2d binary: {ec2d.binary}")
        print(f"ec2d idle RSS (after start-up and seeding, before load): {idle / 1024:.1f} MiB ({idle} KiB)")
        print(f"load: pre-signed SigV4 requests replayed on keep-alive connections by {a.procs} "
              f"selector-loop processes; {a.duration:g}s measured after {a.warmup:g}s warm-up; "
              f"{os.cpu_count()} cores shared by client and server\n")
        hdr = (f"{'operation':24s} {'conns':>5s} | {'ec2d req/s':>10s} {'p50 ms':>7s} {'p99 ms':>7s} {'srv cpu':>7s} "
               f"{'cli cpu':>7s} | {'moto req/s':>10s} {'p50 ms':>7s} {'p99 ms':>7s} {'srv cpu':>7s} | {'ratio':>7s}")
        print(hdr)
        print("-" * len(hdr))
        rows = []
        for op in OPS:
            for n in conns:
                r = {name: run_load(url, op, n, a.duration, a.warmup, a.procs, pids[name])
                     for name, url in servers.items()}
                e, m = r["ec2d"], r.get("moto")
                ratio = (e["rps"] / m["rps"]) if m and m["rps"] else float("nan")
                line = (f"{op:24s} {n:5d} | {e['rps']:10.0f} {e['p50']:7.2f} {e['p99']:7.2f} "
                        f"{e['server_cpu'] * 100:6.0f}% {e['client_cpu'] * 100:6.0f}% | ")
                line += (f"{m['rps']:10.0f} {m['p50']:7.2f} {m['p99']:7.2f} {m['server_cpu'] * 100:6.0f}% | "
                         f"{ratio:6.1f}x" if m else "-")
                errs = {k: v["errors"] for k, v in r.items() if v["errors"]}
                if errs:
                    line += f"  non-200: {errs}"
                if e["reconnects"]:
                    line += f"  ec2d closed {e['reconnects']} connections"
                print(line, flush=True)
                rows.append((op, n, r))
        busy = rss_kib(ec2d.proc.pid)
        print(f"\nec2d RSS after load: {busy / 1024:.1f} MiB")
        if m_closes := [v for _, _, r in rows for k, v in r.items() if k == "moto" and v["reconnects"]]:
            print("moto answers `Connection: close`, so each moto request includes a new TCP connect")
        print("srv cpu = the server process's CPU time / wall time (all threads; 100% = one core)")
        print("cli cpu = load-generator CPU time / wall time, summed over its processes "
              f"(near {a.procs * 100}% means the client, not the server, is the limit)")
    finally:
        ec2d.stop()
        if moto:
            moto.send_signal(signal.SIGTERM)
            try:
                moto.wait(10)
            except subprocess.TimeoutExpired:
                moto.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
