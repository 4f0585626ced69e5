"""The VPC fabric with real packets (issue 5), on the sandbox engine: DHCP, IMDSv2 from inside
the guest, user data, security groups on real connections, public and Elastic IPs reached from
the host, SSH with the launch key pair.

Guests are the tiny AMI. Commands run inside them over SSH (dropbear, as ec2-user) to their
public address on the loopback pool, so every check here crosses the real data path: host
socket -> ec2d's listener -> gateway -> VPC fabric (security groups) -> tap -> guest. Each test
fails if the behaviour it names regresses."""
import json
import os
import shutil
import subprocess
import time

import pytest

import harness

TINY = "ec2d-tiny-x86_64"
SSH_USER = "ec2-user"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the sandbox engine needs root (namespaces, taps, cgroups)")
    if not shutil.which("ssh"):
        pytest.fail("the network tests need an ssh client (apt install openssh-client)")
    yield from harness.instance_server(tmp_path_factory, "network")


@pytest.fixture(scope="module")
def c(server):
    return harness.client(server.url)


@pytest.fixture(scope="module")
def tiny(c):
    imgs = c.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [TINY]}])["Images"]
    assert len(imgs) == 1, imgs
    return imgs[0]["ImageId"]


@pytest.fixture(scope="module")
def key(c, server):
    material = c.create_key_pair(KeyName="net-test")["KeyMaterial"]
    path = server.tmp / "net-test.pem"
    path.write_text(material)
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="module")
def default_vpc(c):
    return c.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]


def group(c, vpc, name, ports=()):
    """A security group opening `ports` (TCP) to anyone."""
    gid = c.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
    for p in ports:
        c.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    return gid


def launch(c, image, key_name, groups, user_data=None, subnet=None, public=True, **kw):
    args = dict(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, KeyName=key_name, **kw)
    if user_data is not None:
        args["UserData"] = user_data
    if subnet is not None or not public:
        ni = {"DeviceIndex": 0, "Groups": groups, "AssociatePublicIpAddress": public}
        if subnet is not None:
            ni["SubnetId"] = subnet
        args["NetworkInterfaces"] = [ni]
    else:
        args["SecurityGroupIds"] = groups
    iid = c.run_instances(**args)["Instances"][0]["InstanceId"]
    c.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return describe(c, iid)


def describe(c, iid):
    return c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def console(c, iid):
    # botocore decodes the base64 Output itself.
    return c.get_console_output(InstanceId=iid, Latest=True).get("Output", "")


def wait_console(c, iid, text, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = console(c, iid)
        if text in out:
            return out
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared on {iid}'s console:\n{console(c, iid)[-3000:]}")


def ssh(ip, key, command, timeout=20, check=True):
    r = subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
         f"{SSH_USER}@{ip}", command],
        capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"ssh {ip} {command!r} failed ({r.returncode}): {r.stdout}{r.stderr}"
    return r


def wait_ssh(ip, key, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = ssh(ip, key, "true", timeout=10, check=False)
            if last.returncode == 0:
                return
        except subprocess.TimeoutExpired as e:
            last = e
        time.sleep(1)
    raise AssertionError(f"ssh to {ip} never worked: {last}")


def http(url, timeout=3):
    """The body, or None when the connection fails (refused, reset or timed out)."""
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), url], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def guest_connect(ip, key, host, port, timeout=3):
    """Whether the guest at `ip` can open a TCP connection to host:port (busybox nc)."""
    r = ssh(ip, key, f"nc -w {timeout} {host} {port} </dev/null >/dev/null 2>&1; echo rc=$?",
            timeout=timeout + 15)
    return r.stdout.strip() == "rc=0"


WEB_USER_DATA = """#!/bin/sh
mkdir -p /www
ID=$(imds get /latest/meta-data/instance-id)
echo "hello from $ID" > /www/index.html
busybox httpd -p 80 -h /www
busybox httpd -p 8080 -h /www
echo "user data: web server up for $ID"
"""


@pytest.fixture(scope="module")
def web(c, tiny, key, default_vpc):
    """The README's scenario: tiny AMI, key pair, SG opening 22 and 80, a web server from user
    data. Also a member of `peers`, which B's rules below refer to."""
    sg = group(c, default_vpc, "net-web", ports=(22, 80))
    peers = group(c, default_vpc, "net-peers")
    inst = launch(c, tiny, "net-test", [sg, peers], user_data=WEB_USER_DATA)
    assert inst.get("PublicIpAddress", "").startswith("127."), inst
    wait_console(c, inst["InstanceId"], "user data: web server up")
    wait_ssh(inst["PublicIpAddress"], key)
    return {"inst": inst, "sg": sg, "peers": peers}


def test_dhcp_gives_the_eni_address_hostname_and_dns(c, web, key):
    inst = web["inst"]
    ip = inst["PublicIpAddress"]
    addr = ssh(ip, key, "ip -4 -o addr show dev eth0").stdout
    assert f"{inst['PrivateIpAddress']}/" in addr, addr
    assert ssh(ip, key, "hostname").stdout.strip() == inst["PrivateDnsName"].split(".")[0]
    resolv = ssh(ip, key, "cat /etc/resolv.conf").stdout
    assert "172.31.0.2" in resolv and "ec2.internal" in resolv, resolv
    # The private name resolves through the VPC's DNS server.
    looked = ssh(ip, key, f"nslookup {inst['PrivateDnsName']} 172.31.0.2", check=False).stdout
    assert inst["PrivateIpAddress"] in looked, looked


def test_public_ip_serves_the_web_server_until_port_80_is_revoked(c, web):
    inst = web["inst"]
    url = f"http://{inst['PublicIpAddress']}/"
    assert http(url) == f"hello from {inst['InstanceId']}\n"
    c.revoke_security_group_ingress(GroupId=web["sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    deadline = time.time() + 5
    while http(url, timeout=2) is not None and time.time() < deadline:
        time.sleep(0.2)
    assert http(url, timeout=2) is None
    c.authorize_security_group_ingress(GroupId=web["sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    deadline = time.time() + 5
    while http(url) is None and time.time() < deadline:
        time.sleep(0.2)
    assert http(url) == f"hello from {inst['InstanceId']}\n"


def test_imds_identity_document_from_inside(c, web, key):
    inst = web["inst"]
    ip = inst["PublicIpAddress"]
    doc = json.loads(ssh(ip, key, "imds get /latest/dynamic/instance-identity/document").stdout)
    assert doc["instanceId"] == inst["InstanceId"]
    assert doc["privateIp"] == inst["PrivateIpAddress"]
    assert doc["imageId"] == inst["ImageId"]
    assert doc["region"] == "us-east-1"
    keys = ssh(ip, key, "imds get /latest/meta-data/public-keys/0/openssh-key").stdout
    assert keys.startswith("ssh-rsa "), keys


def raw_imds(ip, key, request):
    """Sends a raw HTTP request to IMDS from inside the guest; returns the status code."""
    cmd = f"printf '{request}' | nc -w 3 169.254.169.254 80 | head -n1"
    line = ssh(ip, key, cmd).stdout.strip()
    return int(line.split()[1]) if line.startswith("HTTP/") else line


def test_imds_error_rules_from_inside(c, tiny, key, default_vpc):
    sg = group(c, default_vpc, "net-imds", ports=(22,))
    inst = launch(c, tiny, "net-test", [sg], MetadataOptions={"HttpTokens": "required"})
    ip, iid = inst["PublicIpAddress"], inst["InstanceId"]
    wait_ssh(ip, key)
    put = "PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: {}\\r\\n{}\\r\\n"
    assert raw_imds(ip, key, put.format(21600, "")) == 200
    assert raw_imds(ip, key, put.format(0, "")) == 400
    assert raw_imds(ip, key, put.format(21601, "")) == 400
    assert raw_imds(ip, key, put.format(60, "X-Forwarded-For: 10.0.0.9\\r\\n")) == 403
    assert raw_imds(ip, key, "PUT /2021-03-23/api/token HTTP/1.0\\r\\n"
                             "X-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n") == 403
    assert raw_imds(ip, key, "POST /latest/meta-data/ HTTP/1.0\\r\\n\\r\\n") == 405
    # HttpTokens=required: no token, a bad token, an expired token -> 401.
    assert raw_imds(ip, key, "GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n") == 401
    assert raw_imds(ip, key, "GET /latest/meta-data/ HTTP/1.0\\r\\n"
                             "X-aws-ec2-metadata-token: nope\\r\\n\\r\\n") == 401
    out = ssh(ip, key, "T=$(imds token 1); sleep 2; "
                       "printf \"GET /latest/meta-data/ HTTP/1.0\\r\\nX-aws-ec2-metadata-token: $T\\r\\n\\r\\n\" "
                       "| nc -w 3 169.254.169.254 80 | head -n1").stdout
    assert " 401 " in out, out
    # A dated prefix is served like /latest/.
    got = ssh(ip, key, "imds get /2009-04-04/meta-data/instance-id").stdout.strip()
    assert got == iid
    # ModifyInstanceMetadataOptions applies live: optional lets v1 in, disabled shuts it.
    c.modify_instance_metadata_options(InstanceId=iid, HttpTokens="optional")
    assert raw_imds(ip, key, "GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n") == 200
    c.modify_instance_metadata_options(InstanceId=iid, HttpEndpoint="disabled")
    status = raw_imds(ip, key, "GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n")
    assert status != 200, status
    c.terminate_instances(InstanceIds=[iid])


IMDS_USER_DATA = """#!/bin/sh
T=$(printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 300\\r\\n\\r\\n' \\
    | nc -w 3 169.254.169.254 80 | tail -n1)
echo "token-length=${#T}"
ID=$(wget -q -O - --header "X-aws-ec2-metadata-token: $T" http://169.254.169.254/latest/meta-data/instance-id)
echo "user-data-sees-instance-id=$ID"
echo "identity=$(wget -q -O - --header "X-aws-ec2-metadata-token: $T" \\
    http://169.254.169.254/latest/dynamic/instance-identity/document | tr -d ' \\n')"
"""


def test_user_data_queries_imds_with_a_token(c, tiny, key, default_vpc):
    sg = group(c, default_vpc, "net-ud")
    inst = launch(c, tiny, "net-test", [sg], user_data=IMDS_USER_DATA,
                  MetadataOptions={"HttpTokens": "required"})
    iid = inst["InstanceId"]
    out = wait_console(c, iid, "identity=")
    assert f"user-data-sees-instance-id={iid}" in out, out
    token_length = int(out.split("token-length=", 1)[1].split()[0])
    assert token_length > 20, out  # a real token, not an empty body or an error page
    ident = out.split("identity=", 1)[1].splitlines()[0]
    doc = json.loads(ident)
    assert doc["instanceId"] == iid and doc["privateIp"] == inst["PrivateIpAddress"], doc
    c.terminate_instances(InstanceIds=[iid])


def test_security_groups_gate_connections_between_instances(c, web, tiny, key, default_vpc):
    a = web["inst"]
    sg_b = group(c, default_vpc, "net-b", ports=(22,))
    b = launch(c, tiny, "net-test", [sg_b], user_data="#!/bin/sh\nbusybox httpd -p 8080 -h /\necho b-ready\n")
    wait_console(c, b["InstanceId"], "b-ready")
    a_ip, b_priv = a["PublicIpAddress"], b["PrivateIpAddress"]
    assert not guest_connect(a_ip, key, b_priv, 8080), "B admitted A before any rule allowed it"
    perm = {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
            "UserIdGroupPairs": [{"GroupId": web["peers"]}]}
    c.authorize_security_group_ingress(GroupId=sg_b, IpPermissions=[perm])
    assert guest_connect(a_ip, key, b_priv, 8080), "A could not connect after the rule allowed it"
    c.revoke_security_group_ingress(GroupId=sg_b, IpPermissions=[perm])
    assert not guest_connect(a_ip, key, b_priv, 8080), "A still connects after the revoke"
    c.terminate_instances(InstanceIds=[b["InstanceId"]])


def test_another_vpc_never_reaches_a(c, web, tiny, key):
    a = web["inst"]
    vpc = c.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = c.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    sg = group(c, vpc, "net-other", ports=(22,))
    # A admits everything from anywhere on 80, so only the VPC boundary can stop this.
    other = launch(c, tiny, "net-test", [sg], subnet=subnet, public=True)
    ip = other["PublicIpAddress"]
    wait_ssh(ip, key)
    assert not guest_connect(ip, key, a["PrivateIpAddress"], 80)
    assert not guest_connect(ip, key, a["PrivateIpAddress"], 22)
    c.terminate_instances(InstanceIds=[other["InstanceId"]])


def test_guest_cannot_reach_host_services(server, web, key):
    ip = web["inst"]["PublicIpAddress"]
    port = server.url.rsplit(":", 1)[1].strip("/")
    host_ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for target in ["198.18.0.1", "172.31.0.1", "127.0.0.1", *host_ips[:2]]:
        assert not guest_connect(ip, key, target, port), f"guest reached ec2d's API at {target}:{port}"


def test_ssh_follows_an_elastic_ip(c, web, tiny, key, default_vpc):
    a = web["inst"]
    sg = group(c, default_vpc, "net-eip", ports=(22,))
    b = launch(c, tiny, "net-test", [sg])
    alloc = c.allocate_address(Domain="vpc")
    eip = alloc["PublicIp"]
    assert eip.startswith("127.") and eip != "127.0.0.1"
    c.associate_address(AllocationId=alloc["AllocationId"], InstanceId=a["InstanceId"])
    wait_ssh(eip, key)
    assert ssh(eip, key, "hostname").stdout.strip() == a["PrivateDnsName"].split(".")[0]
    c.associate_address(AllocationId=alloc["AllocationId"], InstanceId=b["InstanceId"],
                        AllowReassociation=True)
    deadline = time.time() + 30
    seen = None
    while time.time() < deadline:
        r = ssh(eip, key, "hostname", check=False)
        seen = r.stdout.strip()
        if seen == b["PrivateDnsName"].split(".")[0]:
            break
        time.sleep(1)
    assert seen == b["PrivateDnsName"].split(".")[0], seen
    c.terminate_instances(InstanceIds=[b["InstanceId"]])


def signed_request(creds, body, host="169.254.169.250"):
    """A raw HTTP/1.0 EC2 request signed with `creds` (SigV4, with the session token)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="POST", url=f"http://{host}/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]),
              "ec2", "us-east-1").add_auth(req)
    lines = [f"POST / HTTP/1.0", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return "\r\n".join(lines) + "\r\n\r\n" + body


def test_guest_calls_ec2d_with_its_instance_profile(server, c, tiny, key, default_vpc):
    """The guest reads its role's keys from IMDS and calls ec2d's API at 169.254.169.250 with
    them. (The HMAC is computed on the host, as busybox has no HMAC tool; the keys come from
    inside the guest and the request travels from the guest to the API endpoint.)"""
    iam = harness.iam_client(server.url)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
        "Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName="net-app", AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName="net-app")
    iam.add_role_to_instance_profile(InstanceProfileName="net-app", RoleName="net-app")
    sg = group(c, default_vpc, "net-iam", ports=(22,))
    inst = launch(c, tiny, "net-test", [sg], IamInstanceProfile={"Name": "net-app"})
    ip, iid = inst["PublicIpAddress"], inst["InstanceId"]
    wait_ssh(ip, key)
    assert ssh(ip, key, "imds get meta-data/iam/security-credentials/").stdout.strip() == "net-app"
    creds = json.loads(ssh(ip, key, "imds get meta-data/iam/security-credentials/net-app").stdout)
    assert creds["Code"] == "Success" and creds["AccessKeyId"].startswith("ASIA"), creds
    body = f"Action=DescribeInstances&Version=2016-11-15&InstanceId.1={iid}"

    def from_guest(raw):
        path = server.tmp / "req.http"
        path.write_text(raw)
        r = subprocess.run(
            ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"{SSH_USER}@{ip}", "nc -w 5 169.254.169.250 80"],
            input=raw, capture_output=True, text=True, timeout=30)
        return r.stdout

    answer = from_guest(signed_request(creds, body))
    assert answer.splitlines()[0].endswith(" 200 OK"), answer[:500]
    assert f"<instanceId>{iid}</instanceId>" in answer, answer[:2000]
    forged = dict(creds, Token=creds["Token"][:-4] + "AAAA")
    answer = from_guest(signed_request(forged, body))
    assert "AuthFailure" in answer, answer[:500]
    c.terminate_instances(InstanceIds=[iid])
