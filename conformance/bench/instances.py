#!/usr/bin/env python3
"""Instance figures for the sandbox engine (a program, not a test).

    conformance/.venv/bin/python conformance/bench/instances.py [--latency-runs 10]
        [--batch 100] [--max 1000] [--step 100]

Starts its own ec2d (target/release/ec2d, or $EC2D_BIN) on a free port with a temporary
data directory, as root, and prints:
  - RunInstances -> `running` latency (the state DescribeInstances reports, polled every
    5 ms), over several single launches;
  - one RunInstances call of --batch instances, until all are running;
  - memory per idle instance (the instances' memory cgroups, and ec2d's own RSS growth);
  - the largest number of concurrent tiny instances reached, launching --step at a time up
    to --max (stops at the first failure and says why).
Everything it starts is terminated, and the server stopped, at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import harness  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cgroup_mem(iid):
    try:
        with open(f"/sys/fs/cgroup/memory/ec2d/{iid}/memory.usage_in_bytes") as f:
            return int(f.read())
    except OSError:
        return None


def states(c, ids):
    out = {}
    for i in range(0, len(ids), 200):
        chunk = ids[i:i + 200]
        for r in c.describe_instances(InstanceIds=chunk)["Reservations"]:
            for inst in r["Instances"]:
                out[inst["InstanceId"]] = inst["State"]["Name"]
    return out


def wait_all(c, ids, want, timeout, poll=0.005):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = states(c, ids)
        if all(v == want for v in s.values()) and len(s) == len(ids):
            return True
        time.sleep(poll)
    return False


def terminate(c, ids):
    for i in range(0, len(ids), 200):
        c.terminate_instances(InstanceIds=ids[i:i + 200])
    wait_all(c, ids, "terminated", timeout=120, poll=0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--max", type=int, default=1000)
    ap.add_argument("--step", type=int, default=100)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the sandbox engine needs root")

    srv = harness.Ec2d()
    srv.start()
    try:
        c = harness.client(srv.url, check=False)
        ami = c.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["ec2d-tiny-x86_64"]}])["Images"][0]["ImageId"]
        # The first launch builds the AMI; keep that out of the figures.
        warm = c.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        wait_all(c, [warm], "running", 120)
        terminate(c, [warm])
        print(f"engine: {json.loads(srv.health).get('engine')}")

        lat = []
        for _ in range(a.latency_runs):
            t0 = time.perf_counter()
            iid = c.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.nano")["Instances"][0]["InstanceId"]
            wait_all(c, [iid], "running", 30)
            lat.append((time.perf_counter() - t0) * 1000)
            terminate(c, [iid])
        print(f"RunInstances -> running, {len(lat)} launches: p50 {statistics.median(lat):.0f} ms, "
              f"min {min(lat):.0f} ms, max {max(lat):.0f} ms (target <= 300 ms)")

        base_rss = rss_kib(srv.proc.pid)
        t0 = time.perf_counter()
        ids = [i["InstanceId"] for i in c.run_instances(ImageId=ami, MinCount=a.batch, MaxCount=a.batch, InstanceType="t3.nano")["Instances"]]
        call = time.perf_counter() - t0
        ok = wait_all(c, ids, "running", 120, poll=0.02)
        total = time.perf_counter() - t0
        print(f"{a.batch} instances in one call: call {call:.2f} s, all running after {total:.2f} s"
              f"{'' if ok else ' (NOT all running)'} (target <= 5 s)")
        time.sleep(2)
        mems = [m for m in (cgroup_mem(i) for i in ids) if m is not None]
        if mems:
            print(f"memory per idle instance: {statistics.mean(mems) / 2**20:.2f} MiB in its memory cgroup "
                  f"(mean of {len(mems)})")
        print(f"ec2d RSS: {base_rss / 1024:.1f} MiB before, {rss_kib(srv.proc.pid) / 1024:.1f} MiB with "
              f"{len(ids)} instances")
        terminate(c, ids)

        live = []
        why = "reached --max"
        while len(live) < a.max:
            n = min(a.step, a.max - len(live))
            try:
                new = [i["InstanceId"] for i in c.run_instances(ImageId=ami, MinCount=n, MaxCount=n, InstanceType="t3.nano")["Instances"]]
            except Exception as e:  # noqa: BLE001 - report whatever stopped us
                why = f"RunInstances failed: {e}"
                break
            live += new
            if not wait_all(c, new, "running", 180, poll=0.1):
                s = states(c, new)
                bad = {k: v for k, v in s.items() if v != "running"}
                why = f"{len(bad)} of the last {n} did not reach running: {list(bad.items())[:3]}"
                break
            print(f"  {len(live)} instances running")
        running = sum(1 for v in states(c, live).values() if v == "running")
        print(f"concurrent tiny instances: {running} running ({why}) (target 1000)")
        print(f"ec2d RSS with them: {rss_kib(srv.proc.pid) / 1024:.1f} MiB")
        terminate(c, live)
    finally:
        srv.stop(timeout=120)
        srv.cleanup()


if __name__ == "__main__":
    main()
