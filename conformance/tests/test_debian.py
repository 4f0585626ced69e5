"""The debian-12 AMI: unmodified cloud-init against ec2d, on the sandbox engine, under
HttpTokens=required (IMDSv2 only).

One instance is launched with a key pair, a security group opening 22 and MIME multipart user
data (a #cloud-config part with write_files, users and runcmd, and a #!/bin/sh part). cloud-init
has to do everything itself: DHCP on eth0 through the VPC fabric, an IMDSv2 token, the metadata
crawl, SSH host keys, the key pair's key for `admin`, both user-data parts. The checks look at
what a user sees: GetConsoleOutput (boto3, strict-checked) for the markers the parts write to
/dev/console and to stdout, and SSH as `admin` to the public address (the loopback pool, through
the fabric) for /var/log/cloud-init-output.log, the files, the user, the network and IMDS.

The image is large (debootstrap; ~4 min to build), so it is built once into an image cache
outside the test's data directory: conformance/run does that (`ec2d images debian-12 --data-dir
$EC2D_IMAGE_CACHE`). Without a built image for the current recipe version this module is
SKIPPED LOUDLY, never passed."""
import email.mime.multipart
import email.mime.text
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import harness

DEBIAN = "debian-12-amd64-ec2d"
SSH_USER = "admin"
FIXTURES = os.environ.get("EC2D_FIXTURES") or os.path.join(harness.REPO, "fixtures")
IMAGE_CACHE = os.environ.get("EC2D_IMAGE_CACHE") or os.path.join(harness.REPO, "conformance", ".cache", "images")
# How long cloud-init may take from RunInstances to its final message (about 20 s here).
BOOT_TIMEOUT = 300

CLOUD_CONFIG = """#cloud-config
write_files:
  - path: /etc/ec2d-test/written
    permissions: "0644"
    content: |
      ec2d-write-files-ok
users:
  - default
  - name: ec2d-tester
    gecos: ec2d conformance
    shell: /bin/bash
runcmd:
  - echo "EC2D-RUNCMD-CONSOLE id=$(cloud-init query v1.instance_id) file=$(cat /etc/ec2d-test/written)" > /dev/console
  - echo "EC2D-RUNCMD-STDOUT az=$(cloud-init query v1.availability_zone)"
"""

SCRIPT = """#!/bin/sh
echo "EC2D-SCRIPT-STDOUT user=$(id -un)"
echo "EC2D-SCRIPT-CONSOLE host=$(hostname)" > /dev/console
"""

FINISHED = re.compile(r"Cloud-init v\. \S+ finished at .*Datasource (\S+)\.")


def multipart_user_data():
    msg = email.mime.multipart.MIMEMultipart()
    msg.attach(email.mime.text.MIMEText(CLOUD_CONFIG, "cloud-config"))
    msg.attach(email.mime.text.MIMEText(SCRIPT, "x-shellscript"))
    return msg.as_string()


def recipe_version():
    """The debian-12 version `ec2d serve --engine sandbox` looks for (no boot files)."""
    out = subprocess.run(["bash", os.path.join(FIXTURES, "debian-12", "build"), "--print-version"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the sandbox engine needs root (namespaces, taps, cgroups)")
    if not shutil.which("ssh"):
        pytest.fail("the debian-12 test needs an ssh client (apt install openssh-client)")
    version = recipe_version()
    cached = os.path.join(IMAGE_CACHE, "images", f"debian-12-{version}")
    if not os.path.isfile(os.path.join(cached, "manifest.json")):
        pytest.skip(f"SKIPPED LOUDLY: no debian-12 AMI built for recipe version {version} in {IMAGE_CACHE} "
                    f"(conformance/run builds it as root with debootstrap, ~4 min; or run "
                    f"`ec2d images debian-12 --data-dir {IMAGE_CACHE}`)")
    def link_image(srv):
        # The built image is shared, read-only, through a link in this server's image cache.
        os.makedirs(os.path.join(srv.data_dir, "images"))
        os.symlink(cached, os.path.join(srv.data_dir, "images", f"debian-12-{version}"))

    yield from harness.instance_server(tmp_path_factory, "debian-12", engine="sandbox", prepare=link_image)


@pytest.fixture(scope="module")
def c(server):
    return harness.client(server.url)


def console(c, iid):
    # botocore already decodes GetConsoleOutput's base64.
    return c.get_console_output(InstanceId=iid, Latest=True).get("Output", "")


def ssh(ip, key, command, timeout=30, check=True):
    r = subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
         f"{SSH_USER}@{ip}", command],
        capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"ssh {ip} {command!r} failed ({r.returncode}): {r.stdout}{r.stderr}"
    return r


@pytest.fixture(scope="module")
def booted(c, server):
    """The instance, launched and waited for until cloud-init's final message is on its console."""
    imgs = c.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [DEBIAN]}])["Images"]
    assert len(imgs) == 1, f"{DEBIAN} not listed although its image is cached: {imgs}"
    key = server.tmp / "debian.pem"
    key.write_text(c.create_key_pair(KeyName="debian-test")["KeyMaterial"])
    os.chmod(key, 0o600)
    vpc = c.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    sg = c.create_security_group(GroupName="debian-ssh", Description="ssh", VpcId=vpc)["GroupId"]
    c.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    t0 = time.time()
    r = c.run_instances(ImageId=imgs[0]["ImageId"], InstanceType="t3.micro", MinCount=1, MaxCount=1,
                        KeyName="debian-test", SecurityGroupIds=[sg], UserData=multipart_user_data(),
                        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"})
    iid = r["Instances"][0]["InstanceId"]
    assert r["Instances"][0]["MetadataOptions"]["HttpTokens"] == "required"
    out, m = "", None
    while time.time() < t0 + BOOT_TIMEOUT:
        out = console(c, iid)
        m = FINISHED.search(out)
        if m:
            break
        inst = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] in ("pending", "running"), (
            f"{iid} is {inst['State']['Name']} ({inst.get('StateReason', {}).get('Message')}) before "
            f"cloud-init finished; console:\n{out[-6000:]}")
        time.sleep(1)
    assert m, f"cloud-init never finished on {iid} within {BOOT_TIMEOUT}s; console:\n{out[-6000:]}"
    took = time.time() - t0
    print(f"\n[debian-12: RunInstances -> cloud-init finished in {took:.1f}s]")
    inst = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running", inst["State"]
    assert inst.get("PublicIpAddress", "").startswith("127."), inst
    yield {"inst": inst, "key": str(key), "console": out, "datasource": m.group(1), "seconds": took}
    c.terminate_instances(InstanceIds=[iid])


def test_cloud_init_uses_the_ec2_datasource_with_imdsv2(booted):
    # Under HttpTokens=required a datasource that did not take a token finds nothing, and
    # cloud-init falls back to DataSourceNone; Ec2Local also did the early DHCP on eth0.
    assert booted["datasource"] == "DataSourceEc2Local", booted["console"][-4000:]


def test_console_shows_both_user_data_parts(booted):
    out, iid = booted["console"], booted["inst"]["InstanceId"]
    host = booted["inst"]["PrivateDnsName"].split(".")[0]
    # Written to /dev/console by the cloud-config runcmd and by the shell script.
    assert f"EC2D-RUNCMD-CONSOLE id={iid} file=ec2d-write-files-ok" in out, out[-4000:]
    assert f"EC2D-SCRIPT-CONSOLE host={host}" in out, out[-4000:]
    # Their stdout, which cloud-init copies to the console as well as to its output log.
    assert "EC2D-RUNCMD-STDOUT az=us-east-1" in out, out[-4000:]
    assert "EC2D-SCRIPT-STDOUT user=root" in out, out[-4000:]
    # SSH host keys were made and announced, the default user got the key pair's key.
    assert "-----BEGIN SSH HOST KEY KEYS-----" in out
    assert "Authorized keys from /home/admin/.ssh/authorized_keys for user admin" in out
    assert "[FAILED]" not in out, "a unit failed during boot:\n" + "\n".join(
        line for line in out.splitlines() if "FAILED" in line)


def test_ssh_as_admin_sees_the_cloud_init_output_log(booted):
    ip, key = booted["inst"]["PublicIpAddress"], booted["key"]
    deadline = time.time() + 60
    r = None
    while time.time() < deadline:
        r = ssh(ip, key, "id -un", check=False)
        if r.returncode == 0:
            break
        time.sleep(1)
    assert r is not None and r.returncode == 0, f"ssh admin@{ip} never worked: {r and r.stderr}"
    assert r.stdout.strip() == "admin"
    log = ssh(ip, key, "cat /var/log/cloud-init-output.log").stdout
    assert "EC2D-SCRIPT-STDOUT user=root" in log, log[-3000:]
    assert "EC2D-RUNCMD-STDOUT az=us-east-1" in log, log[-3000:]
    assert "Datasource DataSourceEc2Local" in log, log[-3000:]
    assert ssh(ip, key, "sudo -n cat /etc/ec2d-test/written").stdout == "ec2d-write-files-ok\n"
    assert ssh(ip, key, "getent passwd ec2d-tester").stdout.startswith("ec2d-tester:")
    status = ssh(ip, key, "cloud-init status --long", check=False).stdout
    assert "status: done" in status, status
    result = json.loads(ssh(ip, key, "cat /run/cloud-init/result.json").stdout)
    assert result["v1"]["errors"] == [], result
    failed = ssh(ip, key, "systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units: {failed}"


def test_network_is_what_the_fabric_handed_out(booted):
    inst, key = booted["inst"], booted["key"]
    ip = inst["PublicIpAddress"]
    addr = ssh(ip, key, "ip -4 -o addr show dev eth0").stdout
    assert f"inet {inst['PrivateIpAddress']}/" in addr, addr
    assert "default via 172.31.0.1 dev eth0" in ssh(ip, key, "ip -4 route").stdout
    assert ssh(ip, key, "hostname").stdout.strip() == inst["PrivateDnsName"].split(".")[0]
    dns = ssh(ip, key, "resolvectl dns eth0").stdout
    assert "172.31.0.2" in dns, dns


IMDS_PROBE = r"""python3 - <<'EOF'
import urllib.request, urllib.error
base = "http://169.254.169.254"
def get(path, headers={}):
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
print("v1", get("/latest/meta-data/instance-id")[0])
req = urllib.request.Request(base + "/latest/api/token", method="PUT",
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
token = urllib.request.urlopen(req, timeout=5).read().decode()
print("v2", *get("/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token}))
EOF"""


def test_imds_requires_tokens_from_inside(booted):
    inst, key = booted["inst"], booted["key"]
    out = ssh(inst["PublicIpAddress"], key, IMDS_PROBE).stdout.split("\n")
    assert out[0] == "v1 401", out
    assert out[1] == f"v2 200 {inst['InstanceId']}", out


def test_reboot_keeps_the_instance_and_runs_user_data_once(c, booted):
    """A guest reboot is the same instance to cloud-init: no second run of the user data, the
    same SSH host key, and the network back from what cloud-init wrote on the first boot."""
    inst, key = booted["inst"], booted["key"]
    ip, iid = inst["PublicIpAddress"], inst["InstanceId"]
    host_key = ssh(ip, key, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
    c.reboot_instances(InstanceIds=[iid])
    # (The kernel's boot_id is the host's: a sandbox reboot restarts init, not the kernel.)
    deadline = time.time() + BOOT_TIMEOUT
    log, r = "", None
    while time.time() < deadline:
        try:
            r = ssh(ip, key, "cat /var/log/cloud-init-output.log", timeout=15, check=False)
        except subprocess.TimeoutExpired as e:
            r = e
        if getattr(r, "returncode", None) == 0:
            log = r.stdout
            if log.count("Datasource DataSourceEc2Local") == 2:
                break
        time.sleep(2)
    assert log.count("Datasource DataSourceEc2Local") == 2, (
        f"no second cloud-init run seen (last ssh: {r}); console:\n{console(c, iid)[-4000:]}")
    assert log.count("EC2D-SCRIPT-STDOUT") == 1, log[-3000:]
    assert log.count("EC2D-RUNCMD-STDOUT") == 1, log[-3000:]
    assert ssh(ip, key, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout == host_key
    assert c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
