#!/usr/bin/env python3
"""Network figures for the VPC fabric on the sandbox engine (a program, not a test).

    conformance/.venv/bin/python conformance/bench/network.py [--imds 500] [--mib 256]
        [--connects 300]

Starts its own ec2d (target/release/ec2d, or $EC2D_BIN) as root with a temporary data
directory, launches two tiny instances A and B in the default VPC, and prints each figure next
to a plain loopback baseline measured in the same run:
  - IMDS: requests per second from inside A (busybox wget in a loop, token in a header), and
    the same loop against busybox httpd on A's own 127.0.0.1;
  - TCP throughput A -> B through the fabric (busybox nc), and A -> A over its loopback;
  - connection setup through a public IP: TCP connect + HTTP GET from the host to A's public
    address, and the same to an HTTP server on the host's 127.0.0.1.
Ratios are what to read: the machine is shared and noisy. Everything is terminated at the end.
"""
from __future__ import annotations

import argparse
import http.server
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import harness  # noqa: E402

SSH = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]

WEB = """#!/bin/sh
mkdir -p /www && echo "hello from $(imds get meta-data/instance-id)" > /www/index.html
busybox httpd -p 80 -h /www
busybox httpd -p 127.0.0.1:8081 -h /www
echo bench-ready
"""


def ssh(key, ip, cmd, timeout=600):
    r = subprocess.run(SSH + ["-i", key, f"ec2-user@{ip}", cmd], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"ssh {ip} {cmd!r}: {r.returncode} {r.stdout} {r.stderr}")
    return r.stdout


def wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - keep polling until the deadline
            pass
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def guest_seconds(key, ip, loop):
    """Runs `loop` in the guest between two clock reads; returns the seconds. (busybox date has
    no %N; /proc/uptime has centiseconds, so loops should last seconds.)"""
    clock = "cut -d' ' -f1 /proc/uptime"
    out = ssh(key, ip, f"s=$({clock}); {loop}; e=$({clock}); awk \"BEGIN {{ print $e - $s }}\"")
    return float(out.strip().splitlines()[-1])


def connect_get(host, port, n):
    """Median and p99 milliseconds of connect + GET / + full response, over n fresh connections."""
    times = []
    req = f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(req)
            while s.recv(65536):
                pass
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imds", type=int, default=500, help="IMDS requests per loop")
    ap.add_argument("--mib", type=int, default=256, help="MiB sent per throughput run")
    ap.add_argument("--connects", type=int, default=300, help="connections per latency run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the sandbox engine needs root")

    tmp = tempfile.mkdtemp(prefix="ec2d-netbench-")
    srv = harness.Ec2d(data_dir=os.path.join(tmp, "data"), log_path=os.path.join(tmp, "ec2d.log"))
    os.makedirs(srv.data_dir)
    # Build the tiny AMI up front, so no API call waits for it.
    subprocess.run([srv.binary, "images", "--data-dir", srv.data_dir], check=True,
                   stdout=subprocess.DEVNULL)
    srv.start()
    c = harness.client(srv.url, check=False)
    ids = []
    try:
        key = os.path.join(tmp, "bench.pem")
        with open(key, "w") as f:
            f.write(c.create_key_pair(KeyName="bench")["KeyMaterial"])
        os.chmod(key, 0o600)
        vpc = c.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        sg = c.create_security_group(GroupName="bench", Description="bench", VpcId=vpc)["GroupId"]
        c.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            for p in (22, 80)] + [
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]}])
        ami = c.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": ["ec2d-tiny-x86_64"]}])["Images"][0]["ImageId"]
        res = c.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=2, MaxCount=2,
                              KeyName="bench", SecurityGroupIds=[sg], UserData=WEB)
        ids = [i["InstanceId"] for i in res["Instances"]]
        c.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        insts = {i["InstanceId"]: i for r in c.describe_instances(InstanceIds=ids)["Reservations"]
                 for i in r["Instances"]}
        a, b = insts[ids[0]], insts[ids[1]]
        for i in (a, b):
            wait(lambda i=i: "bench-ready" in c.get_console_output(InstanceId=i["InstanceId"])
                 .get("Output", ""), 120, f"{i['InstanceId']} user data")
            wait(lambda i=i: ssh(key, i["PublicIpAddress"], "true", timeout=15) == "", 60, "ssh")
        a_ip = a["PublicIpAddress"]

        print(f"ec2d {srv.url}, sandbox engine, instances {ids[0]} (A) and {ids[1]} (B)\n")

        # IMDS from inside A, against a loopback httpd in A.
        n = args.imds
        hdr = '--header "X-aws-ec2-metadata-token: $T"'
        imds = guest_seconds(key, a_ip, f"T=$(imds token); i=0; while [ $i -lt {n} ]; do "
                             f"wget -q -O /dev/null {hdr} http://169.254.169.254/latest/meta-data/instance-id; "
                             f"i=$((i+1)); done")
        base = guest_seconds(key, a_ip, f"i=0; while [ $i -lt {n} ]; do "
                             f"wget -q -O /dev/null http://127.0.0.1:8081/index.html; i=$((i+1)); done")
        print(f"IMDS GET from inside a guest   {n / imds:8.0f} req/s   "
              f"(guest loopback httpd {n / base:6.0f} req/s, ratio {imds / base:.2f}x slower; "
              f"one wget process per request)")

        # TCP throughput A -> B through the fabric, against A -> A over loopback.
        mib = args.mib

        def send(listener_ip, port, target):
            # busybox nc -l quits when its stdin ends: the ssh session's stdin stays open (a
            # pipe we hold) until the transfer is over.
            sink = subprocess.Popen(SSH + ["-i", key, f"ec2-user@{listener_ip}",
                                           f"nc -l -p {port} | wc -c"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            took = guest_seconds(key, a_ip, f"dd if=/dev/zero bs=64k count={mib * 16} 2>/dev/null | "
                                 f"nc {target} {port}")
            got = int(sink.communicate(timeout=60)[0].strip() or 0)
            if got != mib << 20:
                raise RuntimeError(f"{target}:{port} received {got} of {mib << 20} bytes")
            return took

        fabric = send(b["PublicIpAddress"], 5001, b["PrivateIpAddress"])
        loop = send(a_ip, 5002, "127.0.0.1")
        print(f"TCP A -> B through the fabric  {mib / fabric:8.1f} MiB/s  "
              f"(guest loopback {mib / loop:7.1f} MiB/s, ratio {fabric / loop:.1f}x slower; "
              f"{mib} MiB, busybox nc)")

        # Connection setup through a public IP, against a host loopback HTTP server.
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        connect_get(a_ip, 80, 10)  # warm up
        pub = connect_get(a_ip, 80, args.connects)
        loc = connect_get("127.0.0.1", httpd.server_address[1], args.connects)
        httpd.shutdown()
        print(f"connect+GET via public IP      p50 {pub[0]:6.2f} ms p99 {pub[1]:6.2f} ms  "
              f"(host loopback python httpd p50 {loc[0]:.2f} ms p99 {loc[1]:.2f} ms, "
              f"ratio {pub[0] / loc[0]:.1f}x)")
    finally:
        if ids:
            c.terminate_instances(InstanceIds=ids)
            try:
                c.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            except Exception as e:  # noqa: BLE001
                print(f"warning: instances did not terminate: {e}")
        srv.stop()


if __name__ == "__main__":
    main()
