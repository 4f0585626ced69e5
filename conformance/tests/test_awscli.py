"""aws-cli v1 (`aws --endpoint-url ... ec2 ...`) against ec2d: a setup script's worth
of commands in-process (strict hook on the CLI's botocore session), plus real
`aws` subprocesses through aws_strict.py."""
import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import harness

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ok(endpoint, *args, **kw):
    rc, out, err, parsed = harness.aws(endpoint, *args, **kw)
    assert rc == 0, f"aws ec2 {' '.join(args)} -> rc {rc}\n{err}"
    return parsed if parsed is not None else out


def fails(endpoint, code, *args):
    rc, out, err, _ = harness.aws(endpoint, *args)
    assert rc != 0 and f"({code})" in err, f"expected {code}: rc {rc}\n{err}"
    return err


def test_cli_setup_script(endpoint, tmp_path, name):
    e = endpoint
    regions = ok(e, "describe-regions", "--query", "Regions[].RegionName", "--output", "json")
    assert "us-east-1" in regions
    zones = ok(e, "describe-availability-zones", "--query", "AvailabilityZones[].ZoneName")
    assert len(zones) >= 3
    vpc = ok(e, "create-vpc", "--cidr-block", "10.100.0.0/16",
             "--tag-specifications", f"ResourceType=vpc,Tags=[{{Key=Name,Value={name}}}]")["Vpc"]["VpcId"]
    ok(e, "modify-vpc-attribute", "--vpc-id", vpc, "--enable-dns-hostnames", '{"Value":true}')
    attr = ok(e, "describe-vpc-attribute", "--vpc-id", vpc, "--attribute", "enableDnsHostnames")
    assert attr["EnableDnsHostnames"]["Value"] is True
    found = ok(e, "describe-vpcs", "--filters", f"Name=tag:Name,Values={name}", "--query", "Vpcs[].VpcId")
    assert found == [vpc]
    sub = ok(e, "create-subnet", "--vpc-id", vpc, "--cidr-block", "10.100.1.0/24",
             "--availability-zone", zones[0])["Subnet"]
    assert sub["AvailableIpAddressCount"] == 251
    ok(e, "modify-subnet-attribute", "--subnet-id", sub["SubnetId"], "--map-public-ip-on-launch")
    assert ok(e, "describe-subnets", "--subnet-ids", sub["SubnetId"],
              "--query", "Subnets[0].MapPublicIpOnLaunch") is True
    igw = ok(e, "create-internet-gateway", "--query", "InternetGateway.InternetGatewayId", "--output", "text").strip()
    ok(e, "attach-internet-gateway", "--internet-gateway-id", igw, "--vpc-id", vpc)
    rtb = ok(e, "create-route-table", "--vpc-id", vpc)["RouteTable"]["RouteTableId"]
    assert ok(e, "create-route", "--route-table-id", rtb, "--destination-cidr-block", "0.0.0.0/0",
              "--gateway-id", igw)["Return"] is True
    assoc = ok(e, "associate-route-table", "--route-table-id", rtb, "--subnet-id", sub["SubnetId"])["AssociationId"]
    sg = ok(e, "create-security-group", "--group-name", name, "--description", "cli test",
            "--vpc-id", vpc)["GroupId"]
    ok(e, "authorize-security-group-ingress", "--group-id", sg, "--protocol", "tcp", "--port", "22",
       "--cidr", "0.0.0.0/0")
    ok(e, "authorize-security-group-ingress", "--group-id", sg, "--ip-permissions",
       "IpProtocol=tcp,FromPort=80,ToPort=80,Ipv6Ranges=[{CidrIpv6=::/0}]")
    fails(e, "InvalidPermission.Duplicate", "authorize-security-group-ingress", "--group-id", sg,
          "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")
    perms = ok(e, "describe-security-groups", "--group-ids", sg, "--query", "SecurityGroups[0].IpPermissions")
    assert sorted(p["FromPort"] for p in perms) == [22, 80]
    rules = ok(e, "describe-security-group-rules", "--filters", f"Name=group-id,Values={sg}")["SecurityGroupRules"]
    assert len(rules) == 3
    ok(e, "revoke-security-group-ingress", "--group-id", sg, "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0")
    ok(e, "authorize-security-group-egress", "--group-id", sg, "--ip-permissions",
       "IpProtocol=tcp,FromPort=5432,ToPort=5432,IpRanges=[{CidrIp=10.0.0.0/8}]")
    ok(e, "revoke-security-group-egress", "--group-id", sg, "--ip-permissions",
       "IpProtocol=tcp,FromPort=5432,ToPort=5432,IpRanges=[{CidrIp=10.0.0.0/8}]")
    ok(e, "create-tags", "--resources", vpc, sub["SubnetId"], sg, "--tags", "Key=owner,Value=cli")
    tags = ok(e, "describe-tags", "--filters", "Name=key,Values=owner", f"Name=resource-id,Values={vpc},{sg}")
    assert sorted(t["ResourceType"] for t in tags["Tags"]) == ["security-group", "vpc"]
    ok(e, "delete-tags", "--resources", sg, "--tags", "Key=owner")
    # key pairs
    pem = ok(e, "create-key-pair", "--key-name", name, "--query", "KeyMaterial", "--output", "text")
    key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fp = ok(e, "describe-key-pairs", "--key-names", name, "--query", "KeyPairs[0].KeyFingerprint", "--output", "text")
    assert fp.strip() == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pubfile = tmp_path / "id.pub"
    pubfile.write_bytes(pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    imp = ok(e, "import-key-pair", "--key-name", name + "-imp", "--public-key-material", f"fileb://{pubfile}")
    spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert imp["KeyFingerprint"] == ":".join(f"{b:02x}" for b in hashlib.md5(spki).digest())
    fails(e, "InvalidKeyPair.Duplicate", "create-key-pair", "--key-name", name)
    ok(e, "delete-key-pair", "--key-name", name)
    ok(e, "delete-key-pair", "--key-name", name + "-imp")
    # instance types
    it = ok(e, "describe-instance-types", "--instance-types", "m5.large", "--query",
            "InstanceTypes[0].[VCpuInfo.DefaultVCpus,MemoryInfo.SizeInMiB]")
    assert it == [2, 8192]
    offs = ok(e, "describe-instance-type-offerings", "--location-type", "availability-zone",
              "--filters", "Name=instance-type,Values=t3.micro", "--query", "InstanceTypeOfferings[].Location")
    assert set(offs) <= set(zones) and len(offs) >= 3
    attrs = ok(e, "describe-account-attributes", "--attribute-names", "supported-platforms")
    assert attrs["AccountAttributes"][0]["AttributeValues"] == [{"AttributeValue": "VPC"}]
    # errors and teardown
    fails(e, "DependencyViolation", "delete-vpc", "--vpc-id", vpc)
    fails(e, "InvalidVpcID.NotFound", "describe-vpcs", "--vpc-ids", "vpc-0123456789abcdef0")
    fails(e, "InvalidVpcID.Malformed", "describe-vpcs", "--vpc-ids", "vpc-zz")
    fails(e, "InvalidSubnet.Conflict", "create-subnet", "--vpc-id", vpc, "--cidr-block", "10.100.1.128/25")
    fails(e, "InvalidSubnet.Range", "create-subnet", "--vpc-id", vpc, "--cidr-block", "10.101.1.0/24")
    fails(e, "DryRunOperation", "create-vpc", "--cidr-block", "10.102.0.0/16", "--dry-run")
    ok(e, "disassociate-route-table", "--association-id", assoc)
    ok(e, "delete-route", "--route-table-id", rtb, "--destination-cidr-block", "0.0.0.0/0")
    ok(e, "delete-route-table", "--route-table-id", rtb)
    ok(e, "detach-internet-gateway", "--internet-gateway-id", igw, "--vpc-id", vpc)
    ok(e, "delete-internet-gateway", "--internet-gateway-id", igw)
    ok(e, "delete-security-group", "--group-id", sg)
    ok(e, "delete-subnet", "--subnet-id", sub["SubnetId"])
    ok(e, "delete-vpc", "--vpc-id", vpc)
    fails(e, "InvalidVpcID.NotFound", "describe-vpcs", "--vpc-ids", vpc)


def test_cli_pagination_auto(endpoint):
    """aws-cli follows NextToken itself when --page-size is set."""
    items = ok(endpoint, "describe-instance-types", "--page-size", "10", "--query", "InstanceTypes[].InstanceType")
    assert len(items) == len(set(items)) and len(items) > 20


def _aws_proc(endpoint, *args, region="us-east-1"):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": region,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_PAGER": ""}
    return subprocess.run([sys.executable, os.path.join(HERE, "aws_strict.py"), "--endpoint-url", endpoint,
                           "ec2", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_subprocess(endpoint):
    p = _aws_proc(endpoint, "describe-vpcs", "--filters", "Name=is-default,Values=true")
    assert p.returncode == 0, p.stderr
    vpcs = json.loads(p.stdout)["Vpcs"]
    assert [v["CidrBlock"] for v in vpcs] == ["172.31.0.0/16"]
    p = _aws_proc(endpoint, "describe-security-groups", "--group-names", "default", "--output", "text", region="eu-west-1")
    assert p.returncode == 0 and "default" in p.stdout, p.stderr
    p = _aws_proc(endpoint, "describe-subnets", "--subnet-ids", "subnet-0123456789abcdef0")
    assert p.returncode == 255 and "InvalidSubnetID.NotFound" in p.stderr, (p.returncode, p.stderr)


def test_real_aws_entrypoint(endpoint):
    """The `aws` console script itself (no strict hook: the same calls are strict-checked above)."""
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    if not os.path.exists(aws):
        pytest.skip("no aws console script beside the interpreter")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    p = subprocess.run([aws, "--endpoint-url", endpoint, "ec2", "describe-regions", "--region-names", "us-east-1",
                        "--output", "json"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["Regions"][0]["RegionName"] == "us-east-1"
