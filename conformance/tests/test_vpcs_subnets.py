"""VPCs (incl. the default VPC) and subnets."""
import ipaddress
import re

import pytest

from conftest import expect

VPC_ID = re.compile(r"^vpc-[0-9a-f]{17}$")
SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{17}$")


def tag(n, v):
    return {"Key": n, "Value": v}


@pytest.fixture
def vpc(ec2, name):
    v = ec2.create_vpc(CidrBlock="10.20.0.0/16",
                       TagSpecifications=[{"ResourceType": "vpc", "Tags": [tag("Name", name)]}])["Vpc"]
    yield v
    # best-effort cleanup of what tests left in it
    for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [v["VpcId"]]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    try:
        ec2.delete_vpc(VpcId=v["VpcId"])
    except Exception:
        pass


# ------------------------------------------------------------ default VPC
def test_default_vpc(ec2):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert len(vpcs) == 1
    v = vpcs[0]
    assert v["CidrBlock"] == "172.31.0.0/16" and v["IsDefault"] is True and v["State"] == "available"
    assert VPC_ID.match(v["VpcId"])
    assert v["InstanceTenancy"] == "default"
    assert v["DhcpOptionsId"].startswith("dopt-")
    assert v["OwnerId"] == "000000000000"
    assert [a["CidrBlock"] for a in v["CidrBlockAssociationSet"]] == ["172.31.0.0/16"]
    assert v["CidrBlockAssociationSet"][0]["CidrBlockState"]["State"] == "associated"
    for attr, key in (("enableDnsSupport", "EnableDnsSupport"), ("enableDnsHostnames", "EnableDnsHostnames")):
        assert ec2.describe_vpc_attribute(VpcId=v["VpcId"], Attribute=attr)[key]["Value"] is True


def test_default_subnets(ec2):
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    assert len(subnets) == len(zones)
    assert {s["AvailabilityZone"] for s in subnets} == {z["ZoneName"] for z in zones}
    zid = {z["ZoneName"]: z["ZoneId"] for z in zones}
    cidrs = set()
    for s in subnets:
        assert s["VpcId"] == vpc_id and s["DefaultForAz"] is True and s["MapPublicIpOnLaunch"] is True
        net = ipaddress.ip_network(s["CidrBlock"])
        assert net.prefixlen == 20 and net.subnet_of(ipaddress.ip_network("172.31.0.0/16"))
        assert s["AvailableIpAddressCount"] == 4096 - 5
        assert s["AvailabilityZoneId"] == zid[s["AvailabilityZone"]]
        assert s["State"] == "available"
        cidrs.add(s["CidrBlock"])
    assert "172.31.0.0/20" in cidrs and "172.31.16.0/20" in cidrs and "172.31.32.0/20" in cidrs


def test_default_vpc_plumbing(ec2):
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    igws = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    igws = igws["InternetGateways"]
    assert len(igws) == 1
    assert igws[0]["Attachments"] == [{"State": "available", "VpcId": vpc_id}]
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    assert len(main) == 1
    routes = {r["DestinationCidrBlock"]: r for r in main[0]["Routes"] if "DestinationCidrBlock" in r}
    assert routes["172.31.0.0/16"]["GatewayId"] == "local"
    assert routes["0.0.0.0/0"]["GatewayId"] == igws[0]["InternetGatewayId"]
    assert all(r["State"] == "active" for r in routes.values())
    assert any(a["Main"] is True for a in main[0]["Associations"])
    sgs = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]
    assert len(sgs) == 1
    sg = sgs[0]
    assert sg["Description"] == "default VPC security group"
    # self-referencing ingress, all egress
    assert len(sg["IpPermissions"]) == 1
    p = sg["IpPermissions"][0]
    assert p["IpProtocol"] == "-1" and [g["GroupId"] for g in p["UserIdGroupPairs"]] == [sg["GroupId"]]
    e = sg["IpPermissionsEgress"]
    assert len(e) == 1 and e[0]["IpProtocol"] == "-1" and e[0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]


# ------------------------------------------------------------------- VPCs
def test_create_describe_vpc(ec2, vpc, name):
    assert VPC_ID.match(vpc["VpcId"])
    assert vpc["CidrBlock"] == "10.20.0.0/16"
    assert vpc["State"] in ("pending", "available")
    assert vpc["IsDefault"] is False
    assert vpc["Tags"] == [tag("Name", name)]
    d = ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"]
    assert len(d) == 1 and d[0]["State"] == "available" and d[0]["Tags"] == [tag("Name", name)]
    assert d[0]["DhcpOptionsId"].startswith("dopt-")
    by_tag = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [name]}])["Vpcs"]
    assert [v["VpcId"] for v in by_tag] == [vpc["VpcId"]]
    by_cidr = ec2.describe_vpcs(Filters=[{"Name": "cidr-block-association.cidr-block", "Values": ["10.20.*"]},
                                         {"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Vpcs"]
    assert [v["VpcId"] for v in by_cidr] == [vpc["VpcId"]]
    # a new VPC comes with a main route table (local route) and a default SG
    rts = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"]
    assert len(rts) == 1 and rts[0]["Associations"][0]["Main"] is True
    assert [(r.get("DestinationCidrBlock"), r["GatewayId"]) for r in rts[0]["Routes"]] == [("10.20.0.0/16", "local")]
    sgs = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["SecurityGroups"]
    assert [g["GroupName"] for g in sgs] == ["default"]


@pytest.mark.parametrize("cidr,code", [
    ("10.0.0.0/8", "InvalidVpc.Range"),
    ("10.0.0.0/29", "InvalidVpc.Range"),
    ("10.0.0.0/33", "InvalidParameterValue"),
    ("not-a-cidr", "InvalidParameterValue"),
])
def test_create_vpc_bad_cidr(ec2, cidr, code):
    expect(code, ec2.create_vpc, CidrBlock=cidr)


def test_create_vpc_edges_ok(ec2):
    for cidr in ("10.99.0.0/16", "10.98.0.0/28"):
        v = ec2.create_vpc(CidrBlock=cidr)["Vpc"]
        assert v["CidrBlock"] == cidr
        ec2.delete_vpc(VpcId=v["VpcId"])


def test_vpc_not_found_and_malformed(ec2):
    expect("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=["vpc-0123456789abcdef0"])
    expect("InvalidVpcID.Malformed", ec2.describe_vpcs, VpcIds=["vpc-nothex"])
    expect("InvalidVpcID.Malformed", ec2.describe_vpcs, VpcIds=["banana"])
    expect("InvalidVpcID.NotFound", ec2.delete_vpc, VpcId="vpc-0123456789abcdef0")


def test_vpc_attributes(ec2, vpc):
    vid = vpc["VpcId"]
    assert ec2.describe_vpc_attribute(VpcId=vid, Attribute="enableDnsSupport")["EnableDnsSupport"]["Value"] is True
    r = ec2.describe_vpc_attribute(VpcId=vid, Attribute="enableDnsHostnames")
    assert r["VpcId"] == vid and r["EnableDnsHostnames"]["Value"] is False
    ec2.modify_vpc_attribute(VpcId=vid, EnableDnsHostnames={"Value": True})
    assert ec2.describe_vpc_attribute(VpcId=vid, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"] is True
    ec2.modify_vpc_attribute(VpcId=vid, EnableDnsSupport={"Value": False})
    assert ec2.describe_vpc_attribute(VpcId=vid, Attribute="enableDnsSupport")["EnableDnsSupport"]["Value"] is False
    expect("InvalidParameterValue", ec2.describe_vpc_attribute, VpcId=vid, Attribute="bogusAttribute")
    expect("InvalidVpcID.NotFound", ec2.modify_vpc_attribute, VpcId="vpc-0123456789abcdef0",
           EnableDnsHostnames={"Value": True})


def test_delete_vpc_with_dependency(ec2, vpc):
    s = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.1.0/24")["Subnet"]
    expect("DependencyViolation", ec2.delete_vpc, VpcId=vpc["VpcId"])
    ec2.delete_subnet(SubnetId=s["SubnetId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])
    expect("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=[vpc["VpcId"]])
    # its main route table and default security group went with it
    assert ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"] == []
    assert ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["SecurityGroups"] == []


# ---------------------------------------------------------------- subnets
def test_create_describe_subnet(ec2, vpc):
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    s = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.1.0/24", AvailabilityZone=zones[1],
                          TagSpecifications=[{"ResourceType": "subnet", "Tags": [tag("tier", "web")]}])["Subnet"]
    assert SUBNET_ID.match(s["SubnetId"])
    assert s["VpcId"] == vpc["VpcId"] and s["CidrBlock"] == "10.20.1.0/24"
    assert s["AvailabilityZone"] == zones[1]
    assert s["AvailableIpAddressCount"] == 256 - 5
    assert s["DefaultForAz"] is False and s["MapPublicIpOnLaunch"] is False
    assert s["State"] in ("pending", "available")
    assert s["Tags"] == [tag("tier", "web")]
    small = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.2.0/28")["Subnet"]
    assert small["AvailableIpAddressCount"] == 16 - 5
    assert small["AvailabilityZone"] in zones
    got = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert {x["SubnetId"] for x in got} == {s["SubnetId"], small["SubnetId"]}
    got = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                                        {"Name": "tag:tier", "Values": ["w*"]}])["Subnets"]
    assert [x["SubnetId"] for x in got] == [s["SubnetId"]]
    got = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.20.2.0/28"]},
                                        {"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert [x["SubnetId"] for x in got] == [small["SubnetId"]]
    got = ec2.describe_subnets(SubnetIds=[small["SubnetId"]])["Subnets"]
    assert got[0]["State"] == "available"


@pytest.mark.parametrize("cidr,code", [
    ("10.21.0.0/24", "InvalidSubnet.Range"),   # outside the VPC
    ("10.20.0.0/15", "InvalidSubnet.Range"),   # bigger than the VPC
    ("10.20.5.0/29", "InvalidSubnet.Range"),   # smaller than /28
    ("10.20.5.0/99", "InvalidParameterValue"),
])
def test_subnet_bad_cidr(ec2, vpc, cidr, code):
    expect(code, ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock=cidr)


def test_subnet_conflict(ec2, vpc):
    ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.8.0/22")
    expect("InvalidSubnet.Conflict", ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock="10.20.9.0/24")
    expect("InvalidSubnet.Conflict", ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock="10.20.0.0/20")
    expect("InvalidSubnet.Conflict", ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock="10.20.8.0/22")


def test_subnet_bad_az_and_vpc(ec2, vpc):
    expect("InvalidParameterValue", ec2.create_subnet, VpcId=vpc["VpcId"], CidrBlock="10.20.3.0/24",
           AvailabilityZone="us-east-1q")
    expect("InvalidVpcID.NotFound", ec2.create_subnet, VpcId="vpc-0123456789abcdef0", CidrBlock="10.20.3.0/24")


def test_modify_subnet_attribute(ec2, vpc):
    s = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.4.0/24")["Subnet"]
    ec2.modify_subnet_attribute(SubnetId=s["SubnetId"], MapPublicIpOnLaunch={"Value": True})
    d = ec2.describe_subnets(SubnetIds=[s["SubnetId"]])["Subnets"][0]
    assert d["MapPublicIpOnLaunch"] is True
    got = ec2.describe_subnets(Filters=[{"Name": "map-public-ip-on-launch", "Values": ["true"]},
                                        {"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert [x["SubnetId"] for x in got] == [s["SubnetId"]]
    ec2.modify_subnet_attribute(SubnetId=s["SubnetId"], MapPublicIpOnLaunch={"Value": False})
    assert ec2.describe_subnets(SubnetIds=[s["SubnetId"]])["Subnets"][0]["MapPublicIpOnLaunch"] is False
    expect("InvalidSubnetID.NotFound", ec2.modify_subnet_attribute, SubnetId="subnet-0123456789abcdef0",
           MapPublicIpOnLaunch={"Value": True})


def test_delete_subnet(ec2, vpc):
    s = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.6.0/24")["Subnet"]
    ec2.delete_subnet(SubnetId=s["SubnetId"])
    expect("InvalidSubnetID.NotFound", ec2.describe_subnets, SubnetIds=[s["SubnetId"]])
    expect("InvalidSubnetID.NotFound", ec2.delete_subnet, SubnetId=s["SubnetId"])
    expect("InvalidSubnetID.Malformed", ec2.describe_subnets, SubnetIds=["subnet-12"])
    # the CIDR is free again
    again = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.6.0/24")["Subnet"]
    assert again["SubnetId"] != s["SubnetId"]
