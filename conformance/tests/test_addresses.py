"""Public IPv4 addresses (auto-assigned at launch, and Elastic IPs), DescribeNetworkInterfaces
and ModifyInstanceMetadataOptions, with boto3 and aws-cli; every response strict-checked.

Public addresses come from ec2d's loopback pool, 127.100.0.0/16, and are unique across every
account and region. The Elastic IP tests that need no instance run on the session server;
those that do run real instances (the tiny AMI) on their own server, which needs the sandbox
engine and so root."""
import ipaddress
import os
import re
import time

import pytest

import harness
from conftest import expect

TINY = "ec2d-tiny-x86_64"
POOL = ipaddress.ip_network("127.100.0.0/16")
ALLOC_ID = re.compile(r"^eipalloc-[0-9a-f]{17}$")
ASSOC_ID = re.compile(r"^eipassoc-[0-9a-f]{17}$")
ACCOUNT = harness.DEFAULT_ACCOUNT


def in_pool(ip):
    a = ipaddress.ip_address(ip)
    return a in POOL and str(a).split(".")[3] not in ("0", "255") and str(a) != "127.0.0.1"


def public_dns(region, ip):
    dashed = ip.replace(".", "-")
    if region == "us-east-1":
        return f"ec2-{dashed}.compute-1.amazonaws.com"
    return f"ec2-{dashed}.{region}.compute.amazonaws.com"


def release_all(c):
    for a in c.describe_addresses()["Addresses"]:
        if a.get("AssociationId"):
            c.disassociate_address(AssociationId=a["AssociationId"])
        c.release_address(AllocationId=a["AllocationId"])


# ------------------------------------------------------- Elastic IPs, no instance
def test_allocate_describe_release(endpoint):
    c = harness.client(endpoint, "ap-southeast-2")
    release_all(c)
    r = c.allocate_address(Domain="vpc", TagSpecifications=[
        {"ResourceType": "elastic-ip", "Tags": [{"Key": "Name", "Value": "web"}]}])
    assert ALLOC_ID.match(r["AllocationId"]) and in_pool(r["PublicIp"])
    assert r["Domain"] == "vpc" and r["PublicIpv4Pool"] == "amazon"
    assert r["NetworkBorderGroup"] == "ap-southeast-2"
    alloc, ip = r["AllocationId"], r["PublicIp"]
    r2 = c.allocate_address()
    assert r2["PublicIp"] != ip

    a = c.describe_addresses(AllocationIds=[alloc])["Addresses"]
    assert a == [{"AllocationId": alloc, "PublicIp": ip, "Domain": "vpc", "PublicIpv4Pool": "amazon",
                  "NetworkBorderGroup": "ap-southeast-2", "Tags": [{"Key": "Name", "Value": "web"}]}]
    assert c.describe_addresses(PublicIps=[ip])["Addresses"][0]["AllocationId"] == alloc
    assert len(c.describe_addresses()["Addresses"]) == 2
    f = lambda n, *v: c.describe_addresses(Filters=[{"Name": n, "Values": list(v)}])["Addresses"]
    assert [x["AllocationId"] for x in f("tag:Name", "web")] == [alloc]
    assert [x["AllocationId"] for x in f("tag-key", "Name")] == [alloc]
    assert [x["AllocationId"] for x in f("public-ip", ip)] == [alloc]
    assert [x["AllocationId"] for x in f("allocation-id", alloc)] == [alloc]
    assert len(f("domain", "vpc")) == 2
    assert f("association-id", "eipassoc-*") == []
    assert f("instance-id", "i-0123456789abcdef0") == []

    # Tags by CreateTags, like every other resource.
    c.create_tags(Resources=[r2["AllocationId"]], Tags=[{"Key": "k", "Value": "v"}])
    assert [x["AllocationId"] for x in f("tag:k", "v")] == [r2["AllocationId"]]

    c.release_address(AllocationId=alloc)
    expect("InvalidAllocationID.NotFound", c.describe_addresses, AllocationIds=[alloc])
    expect("InvalidAllocationID.NotFound", c.release_address, AllocationId=alloc)
    c.release_address(AllocationId=r2["AllocationId"])
    assert c.describe_addresses()["Addresses"] == []


def test_address_errors_and_limit(endpoint):
    c = harness.client(endpoint, "ap-northeast-1")
    release_all(c)
    expect("InvalidAllocationID.Malformed", c.describe_addresses, AllocationIds=["eipalloc-zz"])
    expect("InvalidAllocationID.NotFound", c.describe_addresses, AllocationIds=["eipalloc-0123456789abcdef0"])
    expect("InvalidAddress.NotFound", c.describe_addresses, PublicIps=["127.100.250.250"])
    expect("InvalidParameterValue", c.describe_addresses, Filters=[{"Name": "bogus", "Values": ["x"]}])
    expect("InvalidAllocationID.Malformed", c.release_address, AllocationId="eipalloc-zz")
    expect("InvalidAssociationID.Malformed", c.disassociate_address, AssociationId="eipassoc-zz")
    expect("InvalidAssociationID.NotFound", c.disassociate_address, AssociationId="eipassoc-0123456789abcdef0")
    expect("InvalidParameterValue", c.allocate_address, Domain="standard")
    expect("InvalidParameterValue", c.allocate_address, NetworkBorderGroup="us-east-1")
    expect("InvalidParameterValue", c.allocate_address, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]}])
    st, _ = expect("DryRunOperation", c.allocate_address, DryRun=True)
    assert st == 412
    assert c.describe_addresses()["Addresses"] == []

    allocs = [c.allocate_address(Domain="vpc") for _ in range(5)]
    assert len({a["PublicIp"] for a in allocs}) == 5
    expect("AddressLimitExceeded", c.allocate_address, Domain="vpc")
    first = allocs[0]
    expect("InvalidParameterCombination", c.release_address, AllocationId=first["AllocationId"],
           PublicIp=first["PublicIp"])
    expect("InvalidAddress.NotFound", c.release_address, AllocationId=first["AllocationId"],
           NetworkBorderGroup="ap-northeast-2")
    expect("InvalidAllocationID.NotFound", c.associate_address, AllocationId="eipalloc-0123456789abcdef0",
           InstanceId="i-0123456789abcdef0")
    expect("InvalidInstanceID.NotFound", c.associate_address, AllocationId=first["AllocationId"],
           InstanceId="i-0123456789abcdef0")
    expect("InvalidInstanceID.Malformed", c.associate_address, AllocationId=first["AllocationId"],
           InstanceId="i-zz")
    expect("InvalidNetworkInterfaceID.Malformed", c.associate_address, AllocationId=first["AllocationId"],
           NetworkInterfaceId="eni-zz")
    expect("InvalidNetworkInterfaceID.NotFound", c.associate_address, AllocationId=first["AllocationId"],
           NetworkInterfaceId="eni-0123456789abcdef0")
    expect("InvalidParameterCombination", c.associate_address, AllocationId=first["AllocationId"],
           InstanceId="i-0123456789abcdef0", NetworkInterfaceId="eni-0123456789abcdef0")
    # The deprecated PublicIp form still names the address.
    c.release_address(PublicIp=first["PublicIp"])
    c.allocate_address(Domain="vpc")
    expect("AddressLimitExceeded", c.allocate_address)
    release_all(c)


def test_addresses_unique_across_accounts_and_regions(endpoint):
    clients = [harness.client(endpoint, r) for r in ("sa-east-1", "ca-central-1")]
    clients.append(harness.client(endpoint, "sa-east-1", key=harness.OTHER_KEY, secret=harness.OTHER_SECRET))
    for c in clients:
        release_all(c)
    seen = []
    for c in clients:
        for _ in range(5):
            seen.append(c.allocate_address(Domain="vpc")["PublicIp"])
    assert len(set(seen)) == 15 and all(in_pool(ip) for ip in seen)
    # Nothing of one account is visible to another.
    other, mine = clients[2], clients[0]
    a = mine.describe_addresses()["Addresses"][0]
    expect("InvalidAllocationID.NotFound", other.release_address, AllocationId=a["AllocationId"])
    expect("InvalidAddress.NotFound", other.describe_addresses, PublicIps=[a["PublicIp"]])
    # A released address can be recovered by asking for it.
    mine.release_address(AllocationId=a["AllocationId"])
    again = mine.allocate_address(Domain="vpc", Address=a["PublicIp"])
    assert again["PublicIp"] == a["PublicIp"] and again["AllocationId"] != a["AllocationId"]
    taken = other.describe_addresses()["Addresses"][0]["PublicIp"]
    mine.release_address(AllocationId=again["AllocationId"])
    expect("InvalidAddress.NotFound", mine.allocate_address, Domain="vpc", Address=taken)
    for c in clients:
        release_all(c)


def test_cli_addresses(endpoint):
    e = endpoint
    region = "eu-north-1"

    def ok(*args):
        rc, out, err, parsed = harness.aws(e, *args, region=region)
        assert rc == 0, f"aws ec2 {' '.join(args)} -> rc {rc}\n{err}"
        return parsed

    r = ok("allocate-address", "--domain", "vpc", "--tag-specifications",
           "ResourceType=elastic-ip,Tags=[{Key=Name,Value=cli}]")
    assert in_pool(r["PublicIp"]) and ALLOC_ID.match(r["AllocationId"])
    d = ok("describe-addresses", "--filters", "Name=tag:Name,Values=cli")
    assert [a["PublicIp"] for a in d["Addresses"]] == [r["PublicIp"]]
    d = ok("describe-addresses", "--public-ips", r["PublicIp"])
    assert d["Addresses"][0]["AllocationId"] == r["AllocationId"]
    rc, _, err, _ = harness.aws(e, "release-address", "--allocation-id", "eipalloc-0123456789abcdef0", region=region)
    assert rc != 0 and "(InvalidAllocationID.NotFound)" in err, err
    ok("release-address", "--allocation-id", r["AllocationId"])
    assert ok("describe-addresses")["Addresses"] == []
    assert ok("describe-network-interfaces")["NetworkInterfaces"] == []


def test_describe_network_interfaces_errors(ec2, endpoint):
    expect("InvalidNetworkInterfaceID.Malformed", ec2.describe_network_interfaces, NetworkInterfaceIds=["eni-zz"])
    expect("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
           NetworkInterfaceIds=["eni-0123456789abcdef0"])
    expect("InvalidParameterCombination", ec2.describe_network_interfaces,
           NetworkInterfaceIds=["eni-0123456789abcdef0"], MaxResults=5)
    # botocore refuses MaxResults below the model's minimum itself; send it raw.
    status, _, body = harness.raw_request(endpoint, {"Action": "DescribeNetworkInterfaces", "MaxResults": "4"})
    assert status == 400 and harness.error_code(body)[0] == "InvalidParameterValue", body
    expect("InvalidParameterValue", ec2.describe_network_interfaces, Filters=[{"Name": "bogus", "Values": ["x"]}])
    r = ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id",
                                                  "Values": ["i-0123456789abcdef0"]}])
    assert r["NetworkInterfaces"] == []


# ------------------------------------------------------- with instances
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: instances need the sandbox engine, which needs root")
    yield from harness.instance_server(tmp_path_factory, "addresses")


@pytest.fixture(scope="module")
def c(server):
    return harness.client(server.url)


def tiny_in(c):
    imgs = c.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [TINY]}])["Images"]
    assert len(imgs) == 1, imgs
    return imgs[0]["ImageId"]


@pytest.fixture(scope="module")
def tiny(c):
    return tiny_in(c)


def inst(c, iid):
    return c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def wait_state(c, iid, want, timeout=60):
    deadline = time.time() + timeout
    s = None
    while time.time() < deadline:
        s = inst(c, iid)["State"]["Name"]
        if s == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{iid} is {s}, not {want}, after {timeout}s")


def run(c, ami, **kw):
    kw.setdefault("InstanceType", "t3.nano")
    return c.run_instances(ImageId=ami, MinCount=1, MaxCount=1, **kw)["Instances"][0]["InstanceId"]


def terminate(c, *ids):
    c.terminate_instances(InstanceIds=list(ids))
    for i in ids:
        wait_state(c, i, "terminated")


def eni_of(c, iid):
    r = c.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])
    assert len(r["NetworkInterfaces"]) == 1, r
    return r["NetworkInterfaces"][0]


def check_auto_public_ip(c, iid, region="us-east-1", dns=True):
    """The instance shows an auto-assigned public address everywhere EC2 shows one."""
    i = inst(c, iid)
    ip = i["PublicIpAddress"]
    assert in_pool(ip), ip
    name = public_dns(region, ip) if dns else ""
    assert i["PublicDnsName"] == name
    n = i["NetworkInterfaces"][0]
    want = {"PublicIp": ip, "PublicDnsName": name, "IpOwnerId": "amazon"}
    assert n["Association"] == want
    assert n["PrivateIpAddresses"][0]["Association"] == want
    e = eni_of(c, iid)
    assert e["Association"] == want
    assert e["PrivateIpAddresses"][0]["Association"] == want
    return ip


def test_launch_gets_public_ip_released_at_stop_new_at_start(c, tiny, server):
    iid = run(c, tiny)
    ip = check_auto_public_ip(c, iid)
    e = eni_of(c, iid)
    i = inst(c, iid)
    assert e["NetworkInterfaceId"] == i["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert e["Status"] == "in-use" and e["InterfaceType"] == "interface"
    assert e["Attachment"]["InstanceId"] == iid and e["Attachment"]["InstanceOwnerId"] == ACCOUNT
    assert e["Attachment"]["DeviceIndex"] == 0 and e["Attachment"]["DeleteOnTermination"] is True
    assert e["Attachment"]["Status"] == "attached"
    assert e["VpcId"] == i["VpcId"] and e["SubnetId"] == i["SubnetId"]
    assert e["AvailabilityZone"] == i["Placement"]["AvailabilityZone"]
    assert e["PrivateIpAddress"] == i["PrivateIpAddress"] and e["MacAddress"] == i["NetworkInterfaces"][0]["MacAddress"]
    assert e["Groups"] == i["SecurityGroups"] and e["OwnerId"] == ACCOUNT
    assert e["TagSet"] == [] and e["RequesterManaged"] is False and e["SourceDestCheck"] is True

    # Filters on the ENI and on the instance.
    def enis(name, *values):
        r = c.describe_network_interfaces(Filters=[{"Name": name, "Values": list(values)}])
        return [x["NetworkInterfaceId"] for x in r["NetworkInterfaces"]]

    eid = e["NetworkInterfaceId"]
    for name, value in (("association.public-ip", ip), ("addresses.private-ip-address", e["PrivateIpAddress"]),
                        ("private-ip-address", e["PrivateIpAddress"]), ("mac-address", e["MacAddress"]),
                        ("vpc-id", e["VpcId"]), ("subnet-id", e["SubnetId"]), ("status", "in-use"),
                        ("group-id", e["Groups"][0]["GroupId"]), ("association.ip-owner-id", "amazon"),
                        ("network-interface-id", eid), ("attachment.device-index", "0")):
        assert eid in enis(name, value), name
    assert enis("association.public-ip", "127.0.0.1") == []
    c.create_tags(Resources=[eid], Tags=[{"Key": "role", "Value": "eth0"}])
    assert enis("tag:role", "eth0") == [eid]
    assert c.describe_network_interfaces(NetworkInterfaceIds=[eid])["NetworkInterfaces"][0]["TagSet"] == [
        {"Key": "role", "Value": "eth0"}]
    found = c.describe_instances(Filters=[{"Name": "ip-address", "Values": [ip]}])["Reservations"]
    assert [x["Instances"][0]["InstanceId"] for x in found] == [iid]

    # Stopped: no public address. Started again: a new one (EC2 gives a new one each start).
    wait_state(c, iid, "running")
    c.stop_instances(InstanceIds=[iid])
    wait_state(c, iid, "stopped")
    i = inst(c, iid)
    assert "PublicIpAddress" not in i and i["PublicDnsName"] == ""
    assert "Association" not in i["NetworkInterfaces"][0]
    assert "Association" not in eni_of(c, iid)
    c.start_instances(InstanceIds=[iid])
    ip2 = check_auto_public_ip(c, iid)
    assert ip2 != ip
    wait_state(c, iid, "running")
    assert inst(c, iid)["PublicIpAddress"] == ip2
    terminate(c, iid)
    i = inst(c, iid)
    assert "PublicIpAddress" not in i and i["PublicDnsName"] == ""
    expect("InvalidNetworkInterfaceID.NotFound", c.describe_network_interfaces, NetworkInterfaceIds=[eid])


def test_public_ip_choice_at_launch(c, tiny, server):
    # A subnet of a new VPC does not map public addresses, and the VPC has no DNS hostnames.
    vpc = c.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    sub = c.create_subnet(VpcId=vpc, CidrBlock="10.61.1.0/24")["Subnet"]["SubnetId"]
    plain = run(c, tiny, SubnetId=sub)
    i = inst(c, plain)
    assert "PublicIpAddress" not in i and i["PublicDnsName"] == ""
    assert "Association" not in i["NetworkInterfaces"][0]
    asked = run(c, tiny, NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": sub, "AssociatePublicIpAddress": True}])
    check_auto_public_ip(c, asked, dns=False)
    # With DNS hostnames on, the name follows EC2's pattern; mapping on the subnet is enough.
    c.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    c.modify_subnet_attribute(SubnetId=sub, MapPublicIpOnLaunch={"Value": True})
    mapped = run(c, tiny, SubnetId=sub)
    check_auto_public_ip(c, mapped)
    # AssociatePublicIpAddress=false wins over the default subnet's mapping.
    declined = run(c, tiny, NetworkInterfaces=[{"DeviceIndex": 0, "AssociatePublicIpAddress": False}])
    assert "PublicIpAddress" not in inst(c, declined)
    # Another region: its own DNS pattern.
    west = harness.client(server.url, "eu-west-1")
    wid = run(west, tiny_in(west))
    check_auto_public_ip(west, wid, region="eu-west-1")
    terminate(west, wid)
    terminate(c, plain, asked, mapped, declined)
    c.delete_subnet(SubnetId=sub)
    c.delete_vpc(VpcId=vpc)


def test_many_public_ips_and_eni_pages(c, tiny):
    r = c.run_instances(ImageId=tiny, MinCount=6, MaxCount=6, InstanceType="t3.nano")["Instances"]
    ids = [x["InstanceId"] for x in r]
    ips = [inst(c, i)["PublicIpAddress"] for i in ids]
    assert len(set(ips)) == 6 and all(in_pool(ip) for ip in ips)
    pages = list(c.get_paginator("describe_network_interfaces").paginate(
        Filters=[{"Name": "attachment.instance-id", "Values": ids}], PaginationConfig={"PageSize": 5}))
    assert [len(p["NetworkInterfaces"]) for p in pages] == [5, 1]
    assert "NextToken" in pages[0] and "NextToken" not in pages[1]
    got = {n["Attachment"]["InstanceId"] for p in pages for n in p["NetworkInterfaces"]}
    assert got == set(ids)
    terminate(c, *ids)


def test_elastic_ip_associations(c, tiny):
    release_all(c)
    a = run(c, tiny)
    b = run(c, tiny)
    auto_a = check_auto_public_ip(c, a)
    auto_b = check_auto_public_ip(c, b)
    eip = c.allocate_address(Domain="vpc")
    alloc, ip = eip["AllocationId"], eip["PublicIp"]

    # Associating replaces the auto-assigned address, which goes back to the pool.
    assoc = c.associate_address(AllocationId=alloc, InstanceId=a)["AssociationId"]
    assert ASSOC_ID.match(assoc)
    i = inst(c, a)
    want = {"PublicIp": ip, "PublicDnsName": public_dns("us-east-1", ip), "IpOwnerId": ACCOUNT}
    assert i["PublicIpAddress"] == ip and i["PublicDnsName"] == want["PublicDnsName"]
    assert i["NetworkInterfaces"][0]["Association"] == want
    e = eni_of(c, a)
    assert e["Association"] == {**want, "AllocationId": alloc, "AssociationId": assoc}
    assert e["PrivateIpAddresses"][0]["Association"] == {**want, "AllocationId": alloc, "AssociationId": assoc}
    assert c.describe_network_interfaces(Filters=[{"Name": "association.public-ip", "Values": [auto_a]}])[
        "NetworkInterfaces"] == []
    d = c.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    assert d["InstanceId"] == a and d["AssociationId"] == assoc
    assert d["NetworkInterfaceId"] == e["NetworkInterfaceId"] and d["NetworkInterfaceOwnerId"] == ACCOUNT
    assert d["PrivateIpAddress"] == e["PrivateIpAddress"]
    f = lambda n, v: [x["AllocationId"] for x in c.describe_addresses(Filters=[{"Name": n, "Values": [v]}])["Addresses"]]
    assert f("instance-id", a) == [alloc] and f("association-id", assoc) == [alloc]
    assert f("network-interface-id", e["NetworkInterfaceId"]) == [alloc]
    assert f("private-ip-address", e["PrivateIpAddress"]) == [alloc]
    assert c.describe_network_interfaces(Filters=[{"Name": "association.allocation-id", "Values": [alloc]}])[
        "NetworkInterfaces"][0]["NetworkInterfaceId"] == e["NetworkInterfaceId"]
    # Again where it already is: nothing changes.
    assert c.associate_address(AllocationId=alloc, InstanceId=a)["AssociationId"] == assoc

    # Already associated: moving it needs AllowReassociation. The instance it leaves gets a
    # new auto-assigned address (it was launched with one).
    expect("Resource.AlreadyAssociated", c.associate_address, AllocationId=alloc, InstanceId=b)
    assoc2 = c.associate_address(AllocationId=alloc, NetworkInterfaceId=eni_of(c, b)["NetworkInterfaceId"],
                                 AllowReassociation=True)["AssociationId"]
    assert assoc2 != assoc
    assert inst(c, b)["PublicIpAddress"] == ip
    new_a = check_auto_public_ip(c, a)
    assert new_a != ip
    expect("InvalidAssociationID.NotFound", c.disassociate_address, AssociationId=assoc)

    # A second Elastic IP onto an address that has one: also only with AllowReassociation;
    # the first stays allocated.
    eip2 = c.allocate_address(Domain="vpc")
    expect("Resource.AlreadyAssociated", c.associate_address, AllocationId=eip2["AllocationId"], InstanceId=b)
    assoc3 = c.associate_address(AllocationId=eip2["AllocationId"], InstanceId=b,
                                 AllowReassociation=True)["AssociationId"]
    assert inst(c, b)["PublicIpAddress"] == eip2["PublicIp"]
    first = c.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    assert "AssociationId" not in first and "InstanceId" not in first

    # An Elastic IP stays across stop and start.
    wait_state(c, b, "running")
    c.stop_instances(InstanceIds=[b])
    wait_state(c, b, "stopped")
    assert inst(c, b)["PublicIpAddress"] == eip2["PublicIp"]
    c.start_instances(InstanceIds=[b])
    wait_state(c, b, "running")
    assert inst(c, b)["PublicIpAddress"] == eip2["PublicIp"]

    # Disassociated: the instance gets a new auto-assigned address, as on EC2.
    c.disassociate_address(AssociationId=assoc3)
    back = check_auto_public_ip(c, b)
    assert back != eip2["PublicIp"]
    assert "AssociationId" not in c.describe_addresses(AllocationIds=[eip2["AllocationId"]])["Addresses"][0]

    # In the default VPC, releasing an address in use disassociates it first.
    c.associate_address(AllocationId=eip2["AllocationId"], InstanceId=b)
    c.release_address(AllocationId=eip2["AllocationId"])
    check_auto_public_ip(c, b)

    # Terminating the instance disassociates its Elastic IP, which stays allocated.
    c.associate_address(AllocationId=alloc, InstanceId=a)
    terminate(c, a, b)
    d = c.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    assert "AssociationId" not in d and "InstanceId" not in d and "NetworkInterfaceId" not in d
    c.release_address(AllocationId=alloc)


def test_elastic_ip_in_a_new_vpc(c, tiny):
    release_all(c)
    vpc = c.create_vpc(CidrBlock="10.62.0.0/16")["Vpc"]["VpcId"]
    sub = c.create_subnet(VpcId=vpc, CidrBlock="10.62.1.0/24")["Subnet"]["SubnetId"]
    iid = run(c, tiny, SubnetId=sub)
    eni = eni_of(c, iid)
    eip = c.allocate_address(Domain="vpc")
    # No internet gateway: no public address.
    expect("Gateway.NotAttached", c.associate_address, AllocationId=eip["AllocationId"], InstanceId=iid)
    igw = c.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    c.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    expect("InvalidParameterValue", c.associate_address, AllocationId=eip["AllocationId"],
           NetworkInterfaceId=eni["NetworkInterfaceId"], PrivateIpAddress="10.62.1.200")
    assoc = c.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=eni["NetworkInterfaceId"],
                                PrivateIpAddress=eni["PrivateIpAddress"])["AssociationId"]
    i = inst(c, iid)
    # The VPC has no DNS hostnames: no public name.
    assert i["PublicIpAddress"] == eip["PublicIp"] and i["PublicDnsName"] == ""
    assert c.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]["InstanceId"] == iid
    # Outside the default VPC an address in use cannot be released.
    expect("InvalidIPAddress.InUse", c.release_address, AllocationId=eip["AllocationId"])
    c.disassociate_address(AssociationId=assoc)
    # Launched without a public address: none comes back.
    assert "PublicIpAddress" not in inst(c, iid)
    c.release_address(AllocationId=eip["AllocationId"])
    terminate(c, iid)
    c.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    c.delete_internet_gateway(InternetGatewayId=igw)
    c.delete_subnet(SubnetId=sub)
    c.delete_vpc(VpcId=vpc)


def test_cli_associate_and_network_interfaces(server, tiny):
    e = server.url

    def ok(*args):
        rc, out, err, parsed = harness.aws(e, *args)
        assert rc == 0, f"aws ec2 {' '.join(args)} -> rc {rc}\n{err}"
        return parsed

    c = harness.client(e)
    release_all(c)
    iid = ok("run-instances", "--image-id", tiny, "--instance-type", "t3.nano",
             "--count", "1")["Instances"][0]["InstanceId"]
    alloc = ok("allocate-address", "--domain", "vpc")
    assoc = ok("associate-address", "--allocation-id", alloc["AllocationId"], "--instance-id", iid)["AssociationId"]
    assert ASSOC_ID.match(assoc)
    got = ok("describe-instances", "--instance-ids", iid, "--query", "Reservations[0].Instances[0].PublicIpAddress")
    assert got == alloc["PublicIp"]
    rc, _, err, _ = harness.aws(e, "associate-address", "--allocation-id", alloc["AllocationId"], "--instance-id", iid,
                                "--no-allow-reassociation")
    assert rc == 0, err  # the same place again
    n = ok("describe-network-interfaces", "--filters", f"Name=attachment.instance-id,Values={iid}")
    assert n["NetworkInterfaces"][0]["Association"]["AllocationId"] == alloc["AllocationId"]
    ok("disassociate-address", "--association-id", assoc)
    ok("release-address", "--allocation-id", alloc["AllocationId"])
    ok("terminate-instances", "--instance-ids", iid)
    wait_state(c, iid, "terminated")


def test_modify_instance_metadata_options(c, server, tiny):
    iid = run(c, tiny)
    before = inst(c, iid)["MetadataOptions"]
    assert before["State"] == "applied" and before["HttpEndpoint"] == "enabled"
    r = c.modify_instance_metadata_options(InstanceId=iid, HttpTokens="required", HttpPutResponseHopLimit=3,
                                           InstanceMetadataTags="enabled")
    assert r["InstanceId"] == iid
    m = r["InstanceMetadataOptions"]
    assert m["State"] == "pending" and m["HttpTokens"] == "required" and m["HttpPutResponseHopLimit"] == 3
    assert m["InstanceMetadataTags"] == "enabled" and m["HttpEndpoint"] == "enabled"
    after = inst(c, iid)["MetadataOptions"]
    assert after == {**before, "State": "applied", "HttpTokens": "required", "HttpPutResponseHopLimit": 3,
                     "InstanceMetadataTags": "enabled"}
    found = c.describe_instances(Filters=[{"Name": "metadata-options.http-tokens", "Values": ["required"]},
                                          {"Name": "instance-id", "Values": [iid]}])["Reservations"]
    assert len(found) == 1
    expect("InvalidParameterValue", c.modify_instance_metadata_options, InstanceId=iid, HttpPutResponseHopLimit=65)
    expect("InvalidParameterValue", c.modify_instance_metadata_options, InstanceId=iid, HttpPutResponseHopLimit=0)
    expect("InvalidParameterValue", c.modify_instance_metadata_options, InstanceId=iid, HttpTokens="sometimes")
    expect("InvalidInstanceID.NotFound", c.modify_instance_metadata_options, InstanceId="i-0123456789abcdef0",
           HttpTokens="required")
    expect("InvalidInstanceID.Malformed", c.modify_instance_metadata_options, InstanceId="i-zz",
           HttpTokens="required")
    rc, out, err, parsed = harness.aws(server.url, "modify-instance-metadata-options", "--instance-id", iid,
                                       "--http-endpoint", "disabled", "--http-tokens", "optional")
    assert rc == 0, err
    assert parsed["InstanceMetadataOptions"]["HttpEndpoint"] == "disabled"
    after = inst(c, iid)["MetadataOptions"]
    assert after["HttpEndpoint"] == "disabled" and after["HttpTokens"] == "optional"
    assert after["HttpPutResponseHopLimit"] == 3
    terminate(c, iid)
    expect("IncorrectInstanceState", c.modify_instance_metadata_options, InstanceId=iid, HttpTokens="required")
