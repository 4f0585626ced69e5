"""Internet gateways, route tables (routes, associations, main table) and tags."""
import re

import pytest

from conftest import expect

IGW_ID = re.compile(r"^igw-[0-9a-f]{17}$")
RTB_ID = re.compile(r"^rtb-[0-9a-f]{17}$")
ASSOC_ID = re.compile(r"^rtbassoc-[0-9a-f]{17}$")


@pytest.fixture
def vpc_id(ec2):
    return ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]


# -------------------------------------------------------- internet gateways
def test_internet_gateway_lifecycle(ec2, vpc_id, name):
    igw = ec2.create_internet_gateway(
        TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": [{"Key": "Name", "Value": name}]}]
    )["InternetGateway"]
    gid = igw["InternetGatewayId"]
    assert IGW_ID.match(gid)
    assert igw.get("Attachments", []) == []
    assert igw["Tags"] == [{"Key": "Name", "Value": name}]
    assert igw["OwnerId"] == "000000000000"
    ec2.attach_internet_gateway(InternetGatewayId=gid, VpcId=vpc_id)
    d = ec2.describe_internet_gateways(InternetGatewayIds=[gid])["InternetGateways"][0]
    assert d["Attachments"] == [{"State": "available", "VpcId": vpc_id}]
    f = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    assert [x["InternetGatewayId"] for x in f["InternetGateways"]] == [gid]
    f = ec2.describe_internet_gateways(Filters=[{"Name": "tag:Name", "Values": [name]}])
    assert [x["InternetGatewayId"] for x in f["InternetGateways"]] == [gid]
    # a VPC takes one gateway; a gateway attaches to one VPC
    other = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    expect("Resource.AlreadyAssociated", ec2.attach_internet_gateway, InternetGatewayId=other, VpcId=vpc_id)
    vpc2 = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    expect("Resource.AlreadyAssociated", ec2.attach_internet_gateway, InternetGatewayId=gid, VpcId=vpc2)
    # in use
    expect("DependencyViolation", ec2.delete_internet_gateway, InternetGatewayId=gid)
    expect("DependencyViolation", ec2.delete_vpc, VpcId=vpc_id)
    ec2.detach_internet_gateway(InternetGatewayId=gid, VpcId=vpc_id)
    assert ec2.describe_internet_gateways(InternetGatewayIds=[gid])["InternetGateways"][0].get("Attachments", []) == []
    expect("Gateway.NotAttached", ec2.detach_internet_gateway, InternetGatewayId=gid, VpcId=vpc_id)
    ec2.delete_internet_gateway(InternetGatewayId=gid)
    ec2.delete_internet_gateway(InternetGatewayId=other)
    expect("InvalidInternetGatewayID.NotFound", ec2.describe_internet_gateways, InternetGatewayIds=[gid])
    expect("InvalidInternetGatewayID.NotFound", ec2.delete_internet_gateway, InternetGatewayId=gid)
    expect("InvalidInternetGatewayID.Malformed", ec2.describe_internet_gateways, InternetGatewayIds=["igw-x"])
    ec2.delete_vpc(VpcId=vpc_id)
    ec2.delete_vpc(VpcId=vpc2)


# ------------------------------------------------------------ route tables
def test_route_table_routes(ec2, vpc_id):
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    rt = ec2.create_route_table(VpcId=vpc_id, TagSpecifications=[
        {"ResourceType": "route-table", "Tags": [{"Key": "Name", "Value": "public-" + vpc_id}]}])["RouteTable"]
    rid = rt["RouteTableId"]
    assert RTB_ID.match(rid) and rt["VpcId"] == vpc_id and rt["OwnerId"] == "000000000000"
    assert rt["Tags"] == [{"Key": "Name", "Value": "public-" + vpc_id}]
    byt = ec2.describe_route_tables(Filters=[{"Name": "tag:Name", "Values": ["public-vpc-*"]},
                                             {"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    assert [x["RouteTableId"] for x in byt] == [rid]
    assert rt.get("Associations", []) == []
    local = rt["Routes"]
    assert len(local) == 1 and local[0]["DestinationCidrBlock"] == "10.40.0.0/16"
    assert local[0]["GatewayId"] == "local" and local[0]["State"] == "active"
    assert local[0]["Origin"] == "CreateRouteTable"
    assert ec2.create_route(RouteTableId=rid, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)["Return"] is True
    expect("RouteAlreadyExists", ec2.create_route, RouteTableId=rid, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.create_route(RouteTableId=rid, DestinationIpv6CidrBlock="::/0", GatewayId=igw)
    routes = ec2.describe_route_tables(RouteTableIds=[rid])["RouteTables"][0]["Routes"]
    default = [r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"][0]
    assert default["GatewayId"] == igw and default["Origin"] == "CreateRoute" and default["State"] == "active"
    assert [r["GatewayId"] for r in routes if r.get("DestinationIpv6CidrBlock") == "::/0"] == [igw]
    f = ec2.describe_route_tables(Filters=[{"Name": "route.gateway-id", "Values": [igw]},
                                           {"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    assert [x["RouteTableId"] for x in f] == [rid]
    # replace and delete
    igw2 = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.replace_route(RouteTableId=rid, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.delete_route(RouteTableId=rid, DestinationCidrBlock="0.0.0.0/0")
    ec2.delete_route(RouteTableId=rid, DestinationIpv6CidrBlock="::/0")
    expect("InvalidRoute.NotFound", ec2.delete_route, RouteTableId=rid, DestinationCidrBlock="0.0.0.0/0")
    routes = ec2.describe_route_tables(RouteTableIds=[rid])["RouteTables"][0]["Routes"]
    assert [r["GatewayId"] for r in routes] == ["local"]
    expect("InvalidRouteTableID.NotFound", ec2.create_route, RouteTableId="rtb-0123456789abcdef0",
           DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    expect("InvalidRouteTableID.Malformed", ec2.describe_route_tables, RouteTableIds=["rtb-q"])
    ec2.delete_internet_gateway(InternetGatewayId=igw2)


def test_route_table_associations_and_main(ec2, vpc_id):
    sub = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    main_assoc = [a for a in main["Associations"] if a["Main"]][0]
    assert ASSOC_ID.match(main_assoc["RouteTableAssociationId"])
    assert main_assoc["AssociationState"]["State"] == "associated"
    rt = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    a = ec2.associate_route_table(RouteTableId=rt, SubnetId=sub)
    assoc = a["AssociationId"]
    assert ASSOC_ID.match(assoc) and a["AssociationState"]["State"] == "associated"
    d = ec2.describe_route_tables(RouteTableIds=[rt])["RouteTables"][0]
    assert [(x["SubnetId"], x["Main"], x["RouteTableAssociationId"]) for x in d["Associations"]] == [(sub, False, assoc)]
    f = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [sub]}])["RouteTables"]
    assert [x["RouteTableId"] for x in f] == [rt]
    rt2 = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    expect("Resource.AlreadyAssociated", ec2.associate_route_table, RouteTableId=rt2, SubnetId=sub)
    expect("DependencyViolation", ec2.delete_route_table, RouteTableId=rt)
    # move the subnet with ReplaceRouteTableAssociation
    r = ec2.replace_route_table_association(AssociationId=assoc, RouteTableId=rt2)
    assert ASSOC_ID.match(r["NewAssociationId"]) and r["AssociationState"]["State"] == "associated"
    f = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [sub]}])["RouteTables"]
    assert [x["RouteTableId"] for x in f] == [rt2]
    ec2.disassociate_route_table(AssociationId=r["NewAssociationId"])
    assert ec2.describe_route_tables(RouteTableIds=[rt2])["RouteTables"][0].get("Associations", []) == []
    expect("InvalidAssociationID.NotFound", ec2.disassociate_route_table, AssociationId=r["NewAssociationId"])
    # make rt the main table
    nm = ec2.replace_route_table_association(AssociationId=main_assoc["RouteTableAssociationId"], RouteTableId=rt)
    mains = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                               {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    assert [x["RouteTableId"] for x in mains] == [rt]
    assert [x["RouteTableAssociationId"] for x in mains[0]["Associations"] if x["Main"]] == [nm["NewAssociationId"]]
    expect("DependencyViolation", ec2.delete_route_table, RouteTableId=rt)   # main table
    ec2.delete_route_table(RouteTableId=main["RouteTableId"])                 # no longer main
    ec2.delete_route_table(RouteTableId=rt2)
    expect("InvalidRouteTableID.NotFound", ec2.describe_route_tables, RouteTableIds=[rt2])
    ec2.delete_subnet(SubnetId=sub)
    ec2.delete_vpc(VpcId=vpc_id)


def test_create_route_table_client_token(ec2, vpc_id, name):
    token = name + "-tok"
    a = ec2.create_route_table(VpcId=vpc_id, ClientToken=token)
    b = ec2.create_route_table(VpcId=vpc_id, ClientToken=token)
    assert a["RouteTable"]["RouteTableId"] == b["RouteTable"]["RouteTableId"]
    assert a.get("ClientToken") == token
    n = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    assert len(n) == 2  # main + one
    other_vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    expect("IdempotentParameterMismatch", ec2.create_route_table, VpcId=other_vpc, ClientToken=token)


# -------------------------------------------------------------------- tags
def test_tags_on_every_type(ec2, name):
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=name, Description="d", VpcId=vpc)["GroupId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    kp = ec2.create_key_pair(KeyName=name)["KeyPairId"]
    ids = {vpc: "vpc", sub: "subnet", sg: "security-group", igw: "internet-gateway", rtb: "route-table",
           kp: "key-pair"}
    ec2.create_tags(Resources=list(ids), Tags=[{"Key": "suite", "Value": name}, {"Key": "empty", "Value": ""}])
    got = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": list(ids)}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in got} == \
        {(i, ty, k, v) for i, ty in ids.items() for k, v in (("suite", name), ("empty", ""))}
    by_value = ec2.describe_tags(Filters=[{"Name": "value", "Values": [name]}])["Tags"]
    assert {t["ResourceId"] for t in by_value} == set(ids)
    by_type = ec2.describe_tags(Filters=[{"Name": "resource-type", "Values": ["subnet"]},
                                         {"Name": "key", "Values": ["suite"]}, {"Name": "value", "Values": [name]}])
    assert [t["ResourceId"] for t in by_type["Tags"]] == [sub]
    # tag-key / tag-value filters on describe calls
    assert [v["VpcId"] for v in ec2.describe_vpcs(Filters=[{"Name": "tag-value", "Values": [name]}])["Vpcs"]] == [vpc]
    assert sub in [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "tag-key", "Values": ["suite"]}])["Subnets"]]
    # overwrite a value
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "suite", "Value": "changed"}])
    assert {t["Key"]: t["Value"] for t in ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["Tags"]}["suite"] == "changed"
    # delete: a value that does not match leaves the tag; key-only removes it
    ec2.delete_tags(Resources=[sub], Tags=[{"Key": "suite", "Value": "nope"}])
    assert {t["Key"] for t in ec2.describe_subnets(SubnetIds=[sub])["Subnets"][0]["Tags"]} == {"suite", "empty"}
    ec2.delete_tags(Resources=[sub], Tags=[{"Key": "suite"}])
    assert {t["Key"] for t in ec2.describe_subnets(SubnetIds=[sub])["Subnets"][0]["Tags"]} == {"empty"}
    ec2.delete_tags(Resources=list(ids))
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": list(ids)}])["Tags"] == []
    expect("InvalidVpcID.NotFound", ec2.create_tags, Resources=["vpc-0123456789abcdef0"],
           Tags=[{"Key": "a", "Value": "b"}])
    expect("InvalidParameterValue", ec2.create_tags, Resources=[vpc], Tags=[{"Key": "aws:reserved", "Value": "x"}])


def test_describe_tags_pagination(ec2, name):
    vpc = ec2.create_vpc(CidrBlock="10.44.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": f"k{i:02d}", "Value": name} for i in range(12)])
    flt = [{"Name": "resource-id", "Values": [vpc]}]
    first = ec2.describe_tags(Filters=flt, MaxResults=5)
    assert len(first["Tags"]) == 5 and first.get("NextToken")
    allk = [t["Key"] for p in ec2.get_paginator("describe_tags").paginate(
        Filters=flt, PaginationConfig={"PageSize": 5}) for t in p["Tags"]]
    assert sorted(allk) == [f"k{i:02d}" for i in range(12)]
    ec2.delete_vpc(VpcId=vpc)
