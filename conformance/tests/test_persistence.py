"""State survives a restart (SIGTERM) and a kill -9, on a server of its own."""
import pytest

import harness


@pytest.fixture
def own_server(tmp_path):
    srv = harness.Ec2d(data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "ec2d.log"))
    (tmp_path / "data").mkdir()
    srv.start()
    yield srv
    srv.stop()


def snapshot(c, vpc_id):
    return {
        "vpc": c.describe_vpcs(VpcIds=[vpc_id])["Vpcs"],
        "subnets": sorted(c.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"],
                          key=lambda s: s["SubnetId"]),
        "sgs": sorted(c.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"],
                      key=lambda g: g["GroupId"]),
        "rtbs": sorted(c.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"],
                       key=lambda r: r["RouteTableId"]),
        "igw": c.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"],
        "keys": sorted(c.describe_key_pairs(IncludePublicKey=True)["KeyPairs"], key=lambda k: k["KeyName"]),
        "tags": sorted(c.describe_tags(Filters=[{"Name": "key", "Values": ["persist"]}])["Tags"],
                       key=lambda t: t["ResourceId"]),
        "default": c.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"],
        "attr": c.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"],
    }


def build(c):
    vpc = c.create_vpc(CidrBlock="10.90.0.0/16",
                       TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "persist", "Value": "yes"}]}])
    vpc_id = vpc["Vpc"]["VpcId"]
    c.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    sub = c.create_subnet(VpcId=vpc_id, CidrBlock="10.90.1.0/24")["Subnet"]["SubnetId"]
    c.modify_subnet_attribute(SubnetId=sub, MapPublicIpOnLaunch={"Value": True})
    sg = c.create_security_group(GroupName="persist", Description="p", VpcId=vpc_id)["GroupId"]
    c.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    igw = c.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    c.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    rt = c.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    c.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    c.associate_route_table(RouteTableId=rt, SubnetId=sub)
    c.create_key_pair(KeyName="persist-rsa")
    c.create_tags(Resources=[sub, sg, igw, rt], Tags=[{"Key": "persist", "Value": "yes"}])
    return vpc_id


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_keeps_state(own_server, how):
    c = harness.client(own_server.url)
    vpc_id = build(c)
    before = snapshot(c, vpc_id)
    assert len(before["tags"]) == 5 and before["keys"]
    if how == "sigterm":
        own_server.stop()
    else:
        own_server.kill9()
    own_server.start()
    c2 = harness.client(own_server.url)
    after = snapshot(c2, vpc_id)
    assert after == before
    # and the server still works on top of the old state
    c2.create_subnet(VpcId=vpc_id, CidrBlock="10.90.2.0/24")
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as ei:
        c2.create_subnet(VpcId=vpc_id, CidrBlock="10.90.1.0/25")
    assert ei.value.response["Error"]["Code"] == "InvalidSubnet.Conflict"
