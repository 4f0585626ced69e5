"""Instances are real machines (issue 4), on the engine `--engine auto` picks here (the
sandbox, since this machine's /dev/kvm is PVM). Every response is strict-checked.

The lifecycle: run the tiny AMI, see it running and its ready line on the console, stop,
start (the root volume's boot counter shows the data survived), reboot, create an image
and boot it, terminate, and check the host is left clean; then a kill -9 of ec2d with an
instance running, and the restart that brings it back."""
import json
import os
import subprocess
import time

import pytest

import harness
from conftest import expect

TINY = "ec2d-tiny-x86_64"


def host_is_clean(data_dir, instance_ids):
    """No process, mount, loop device or cgroup of these instances left on the host."""
    problems = []
    mounts = open("/proc/self/mountinfo").read()
    for i in instance_ids:
        if i in mounts:
            problems.append(f"mount of {i}")
        for ctl in ("cpu", "memory", "pids"):
            if os.path.exists(f"/sys/fs/cgroup/{ctl}/ec2d/{i}"):
                problems.append(f"cgroup {ctl}/ec2d/{i}")
    loops = json.loads(subprocess.run(["losetup", "-J", "--list"], capture_output=True, text=True).stdout or '{"loopdevices": []}')
    for dev in loops.get("loopdevices", []):
        back = dev.get("back-file") or ""
        if back.startswith(str(data_dir)) and any(i in back or "vol-" in back for i in instance_ids):
            problems.append(f"loop device {dev.get('name')} -> {back}")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for i in instance_ids:
        for line in ps.splitlines():
            if i in line and "pytest" not in line:
                problems.append(f"process {line.strip()}")
    return problems


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the sandbox engine needs root (namespaces, loop devices, cgroups)")
    other = f"{harness.OTHER_KEY}:{harness.OTHER_SECRET}:{harness.OTHER_ACCOUNT}"
    yield from harness.instance_server(tmp_path_factory, "instances", credentials=[other])


@pytest.fixture(scope="module")
def c(server):
    return harness.client(server.url)


@pytest.fixture(scope="module")
def tiny(c):
    imgs = c.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [TINY]}])["Images"]
    assert len(imgs) == 1, imgs
    return imgs[0]["ImageId"]


def state(c, iid):
    r = c.describe_instances(InstanceIds=[iid])["Reservations"]
    return r[0]["Instances"][0]["State"]["Name"]


def wait_state(c, iid, want, timeout=60):
    deadline = time.time() + timeout
    s = None
    while time.time() < deadline:
        s = state(c, iid)
        if s == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{iid} is {s}, not {want}, after {timeout}s")


def console(c, iid):
    out = c.get_console_output(InstanceId=iid).get("Output", "")
    return out


def wait_console(c, iid, text, count=1, timeout=30):
    deadline = time.time() + timeout
    out = ""
    while time.time() < deadline:
        out = console(c, iid)
        if out.count(text) >= count:
            return out
        time.sleep(0.1)
    raise AssertionError(f"console of {iid} never showed {text!r} x{count}:\n{out[-2000:]}")


def test_builtin_ami_is_public_everywhere(c, server, tiny):
    img = c.describe_images(ImageIds=[tiny])["Images"][0]
    assert img["Public"] is True and img["State"] == "available"
    assert img["RootDeviceName"] == "/dev/xvda" and img["RootDeviceType"] == "ebs"
    west = harness.client(server.url, "eu-west-1")
    w = west.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [TINY]}])["Images"]
    assert len(w) == 1 and w[0]["ImageId"] != tiny


def test_lifecycle(c, server, tiny):
    r = c.run_instances(ImageId=tiny, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "life"}]}])
    inst = r["Instances"][0]
    iid = inst["InstanceId"]
    assert inst["State"]["Name"] == "pending"
    assert inst["PrivateIpAddress"].startswith("172.31.")
    wait_state(c, iid, "running")
    out = wait_console(c, iid, f"ec2d-tiny: instance {iid} ready")

    d = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert d["Tags"] == [{"Key": "Name", "Value": "life"}]
    assert d["InstanceType"] == "t3.micro" and d["ImageId"] == tiny
    root = d["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    vol = c.describe_volumes(VolumeIds=[root])["Volumes"][0]
    assert vol["State"] == "in-use" and vol["Attachments"][0]["InstanceId"] == iid
    st = c.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"][0]
    assert st["InstanceStatus"]["Status"] == "ok" and st["SystemStatus"]["Status"] == "ok"

    # Stop and start: the same root volume, so the guest's boot counter goes on.
    stopping = c.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert stopping["CurrentState"]["Name"] == "stopping"
    wait_state(c, iid, "stopped")
    assert "ec2d-tiny: powering off" in console(c, iid)
    d = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert d["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    c.start_instances(InstanceIds=[iid])
    wait_state(c, iid, "running")
    out = wait_console(c, iid, f"ec2d-tiny: instance {iid} ready", count=2)
    assert "ec2d-tiny: boot 2" in out, out[-1500:]

    # Reboot: stays running, the guest boots again.
    c.reboot_instances(InstanceIds=[iid])
    wait_console(c, iid, f"ec2d-tiny: instance {iid} ready", count=3)
    assert state(c, iid) == "running"

    # An image of it boots, and carries the disk's contents.
    ami = c.create_image(InstanceId=iid, Name="life-image")["ImageId"]
    img = c.describe_images(ImageIds=[ami])["Images"][0]
    assert img["OwnerId"] == "000000000000" and img["State"] == "available"
    snap = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert c.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["VolumeId"] == root
    r2 = c.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.nano")
    iid2 = r2["Instances"][0]["InstanceId"]
    wait_state(c, iid2, "running")
    out2 = wait_console(c, iid2, f"ec2d-tiny: instance {iid2} ready")
    assert "ec2d-tiny: boot 4" in out2, out2[-1500:]

    # Terminate both; root volumes go with them, and nothing is left on the host.
    t = c.terminate_instances(InstanceIds=[iid, iid2])["TerminatingInstances"]
    assert {x["CurrentState"]["Name"] for x in t} == {"shutting-down"}
    wait_state(c, iid, "terminated")
    wait_state(c, iid2, "terminated")
    expect("InvalidVolume.NotFound", c.describe_volumes, VolumeIds=[root])
    assert host_is_clean(server.data_dir, [iid, iid2]) == []
    # Terminated instances stay visible for a while.
    assert state(c, iid) == "terminated"


def test_disable_api_termination(c, tiny):
    r = c.run_instances(ImageId=tiny, MinCount=1, MaxCount=1, DisableApiTermination=True)
    iid = r["Instances"][0]["InstanceId"]
    expect("OperationNotPermitted", c.terminate_instances, InstanceIds=[iid])
    c.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": False})
    c.terminate_instances(InstanceIds=[iid])
    wait_state(c, iid, "terminated")


def test_many_in_one_call(c, tiny):
    r = c.run_instances(ImageId=tiny, MinCount=5, MaxCount=5, InstanceType="t3.nano")
    ids = [i["InstanceId"] for i in r["Instances"]]
    assert len({i["PrivateIpAddress"] for i in r["Instances"]}) == 5
    assert [i["AmiLaunchIndex"] for i in r["Instances"]] == [0, 1, 2, 3, 4]
    for i in ids:
        wait_state(c, i, "running")
    c.terminate_instances(InstanceIds=ids)
    for i in ids:
        wait_state(c, i, "terminated")


def test_run_instances_errors(c, tiny):
    expect("InvalidAMIID.NotFound", c.run_instances, ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)
    expect("InvalidAMIID.Malformed", c.run_instances, ImageId="ami-zz", MinCount=1, MaxCount=1)
    expect("InvalidKeyPair.NotFound", c.run_instances, ImageId=tiny, MinCount=1, MaxCount=1, KeyName="nope")
    expect("InvalidInstanceID.Malformed", c.describe_instances, InstanceIds=["i-xyz"])
    expect("InvalidInstanceID.NotFound", c.stop_instances, InstanceIds=["i-0123456789abcdef0"])
    expect("InvalidParameterValue", c.run_instances, ImageId=tiny, MinCount=2, MaxCount=1)


def test_cli_scenario(server, tiny):
    """The README's aws-cli path: run, describe, console, terminate."""
    rc, out, err, _ = harness.aws(server.url, "run-instances", "--image-id", tiny, "--instance-type", "t3.micro",
                                  "--count", "1", "--query", "Instances[0].InstanceId", "--output", "text")
    assert rc == 0, err
    iid = out.strip()
    c = harness.client(server.url)
    wait_state(c, iid, "running")
    wait_console(c, iid, f"ec2d-tiny: instance {iid} ready")
    rc, text, err, _ = harness.aws(server.url, "get-console-output", "--instance-id", iid, "--output", "text",
                                   "--query", "Output")
    assert rc == 0 and f"instance {iid} ready" in text, (rc, text, err)
    rc, _, err, _ = harness.aws(server.url, "terminate-instances", "--instance-ids", iid)
    assert rc == 0, err
    wait_state(c, iid, "terminated")


def test_kill9_restart_brings_instances_back(tmp_path, tiny):
    srv = harness.Ec2d(data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "ec2d.log"))
    os.makedirs(srv.data_dir)
    srv.start()
    try:
        c = harness.client(srv.url)
        r = c.run_instances(ImageId=tiny, MinCount=1, MaxCount=1)["Instances"][0]
        iid, ip = r["InstanceId"], r["PrivateIpAddress"]
        wait_state(c, iid, "running")
        wait_console(c, iid, f"ec2d-tiny: instance {iid} ready")
        vol = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        srv.kill9()
        srv.start()
        c = harness.client(srv.url)
        wait_state(c, iid, "running")
        d = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert d["PrivateIpAddress"] == ip
        assert d["BlockDeviceMappings"][0]["Ebs"]["VolumeId"] == vol
        wait_console(c, iid, f"ec2d-tiny: instance {iid} ready", count=2)
        c.terminate_instances(InstanceIds=[iid])
        wait_state(c, iid, "terminated")
        assert host_is_clean(srv.data_dir, [iid]) == []
    finally:
        srv.stop()


def test_images_snapshots_and_attributes(c, server, tiny):
    other = harness.client(server.url, key=harness.OTHER_KEY, secret=harness.OTHER_SECRET)
    r = c.run_instances(ImageId=tiny, MinCount=1, MaxCount=1)
    iid = r["Instances"][0]["InstanceId"]
    wait_state(c, iid, "running")
    c.stop_instances(InstanceIds=[iid])
    wait_state(c, iid, "stopped")
    root = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]

    snap = c.create_snapshot(VolumeId=root, Description="by hand",
                             TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}])
    assert snap["VolumeId"] == root and snap["State"] in ("pending", "completed")
    sid = snap["SnapshotId"]
    s = c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert s["State"] == "completed" and s["VolumeSize"] == 1 and s["Tags"] == [{"Key": "k", "Value": "v"}]
    assert any(x["SnapshotId"] == sid for x in c.describe_snapshots(OwnerIds=["self"])["Snapshots"])

    ami = c.register_image(Name="registered-from-snap", RootDeviceName="/dev/xvda", Architecture="x86_64",
                           BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"]
    expect("InvalidAMIName.Duplicate", c.register_image, Name="registered-from-snap", RootDeviceName="/dev/xvda",
           BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])
    expect("InvalidSnapshot.InUse", c.delete_snapshot, SnapshotId=sid)

    # Launch permissions: private until shared, then visible to the other account.
    perms = c.describe_image_attribute(ImageId=ami, Attribute="launchPermission")["LaunchPermissions"]
    assert perms == []
    expect("InvalidAMIID.NotFound", other.describe_images, ImageIds=[ami])
    c.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": harness.OTHER_ACCOUNT}]})
    assert other.describe_images(ImageIds=[ami])["Images"][0]["ImageId"] == ami
    c.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
    assert c.describe_images(ImageIds=[ami])["Images"][0]["Public"] is True
    c.modify_image_attribute(ImageId=ami, Description={"Value": "new words"})
    assert c.describe_image_attribute(ImageId=ami, Attribute="description")["Description"]["Value"] == "new words"

    # The registered image boots, from the snapshot's disk.
    r2 = c.run_instances(ImageId=ami, MinCount=1, MaxCount=1)
    iid2 = r2["Instances"][0]["InstanceId"]
    wait_state(c, iid2, "running")
    wait_console(c, iid2, f"ec2d-tiny: instance {iid2} ready")

    attr = c.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")["InstanceType"]["Value"]
    assert attr == r["Instances"][0]["InstanceType"]
    c.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t3.small"})
    assert c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["InstanceType"] == "t3.small"

    c.terminate_instances(InstanceIds=[iid, iid2])
    wait_state(c, iid, "terminated")
    wait_state(c, iid2, "terminated")
    c.deregister_image(ImageId=ami)
    expect("InvalidAMIID.NotFound", c.describe_images, ImageIds=[ami])
    c.delete_snapshot(SnapshotId=sid)
    expect("InvalidSnapshot.NotFound", c.describe_snapshots, SnapshotIds=[sid])


def guest_init_pid(iid):
    """The host PID of an instance's init (its environment names the instance)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if f"ec2d_instance_id={iid}".encode() in env and b"/sbin/init" in cmd:
            return int(pid)
    return None


@pytest.mark.parametrize("behavior,final", [("stop", "stopped"), ("terminate", "terminated")])
def test_guest_initiated_poweroff(c, tiny, behavior, final):
    """What busybox `poweroff` does inside the guest (SIGUSR2 to its init) follows
    InstanceInitiatedShutdownBehavior."""
    import signal

    r = c.run_instances(ImageId=tiny, MinCount=1, MaxCount=1, InstanceInitiatedShutdownBehavior=behavior)
    iid = r["Instances"][0]["InstanceId"]
    wait_state(c, iid, "running")
    wait_console(c, iid, f"ec2d-tiny: instance {iid} ready")
    pid = guest_init_pid(iid)
    assert pid, "guest init not found"
    os.kill(pid, signal.SIGUSR2)
    wait_state(c, iid, final)
    d = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert d["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown", d["StateReason"]
    if final == "stopped":
        c.terminate_instances(InstanceIds=[iid])
        wait_state(c, iid, "terminated")


def test_subnet_and_group_in_use(c, tiny):
    """A subnet or security group an instance uses cannot be deleted (issue 2's DependencyViolation)."""
    vpc = c.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    sub = c.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    sg = c.create_security_group(GroupName="in-use", Description="x", VpcId=vpc)["GroupId"]
    r = c.run_instances(ImageId=tiny, MinCount=1, MaxCount=1, SubnetId=sub, SecurityGroupIds=[sg],
                        PrivateIpAddress="10.77.1.10")
    inst = r["Instances"][0]
    assert inst["PrivateIpAddress"] == "10.77.1.10" and inst["VpcId"] == vpc
    assert inst["SecurityGroups"] == [{"GroupId": sg, "GroupName": "in-use"}]
    expect("InvalidIPAddress.InUse", c.run_instances, ImageId=tiny, MinCount=1, MaxCount=1, SubnetId=sub,
           PrivateIpAddress="10.77.1.10")
    expect("DependencyViolation", c.delete_subnet, SubnetId=sub)
    expect("DependencyViolation", c.delete_security_group, GroupId=sg)
    c.terminate_instances(InstanceIds=[inst["InstanceId"]])
    wait_state(c, inst["InstanceId"], "terminated")
    c.delete_security_group(GroupId=sg)
    c.delete_subnet(SubnetId=sub)
    c.delete_vpc(VpcId=vpc)


def test_larger_root_volume(c, tiny):
    r = c.run_instances(ImageId=tiny, MinCount=1, MaxCount=1,
                        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                              "Ebs": {"VolumeSize": 3, "DeleteOnTermination": False}}])
    iid = r["Instances"][0]["InstanceId"]
    wait_state(c, iid, "running")
    wait_console(c, iid, f"ec2d-tiny: instance {iid} ready")
    d = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    vol = d["BlockDeviceMappings"][0]["Ebs"]
    assert vol["DeleteOnTermination"] is False
    assert c.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]["Size"] == 3
    expect("InvalidBlockDeviceMapping", c.run_instances, ImageId=tiny, MinCount=1, MaxCount=1,
           BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 0}}])
    c.terminate_instances(InstanceIds=[iid])
    wait_state(c, iid, "terminated")
    # Kept after termination, and detached.
    v = c.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]
    assert v["State"] == "available" and v["Attachments"] == []
