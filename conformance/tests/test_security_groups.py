"""Security groups: create/describe/delete, ingress/egress authorize/revoke, rules."""
import re

import pytest

from conftest import expect

SG_ID = re.compile(r"^sg-[0-9a-f]{17}$")
SGR_ID = re.compile(r"^sgr-[0-9a-f]{17}$")


@pytest.fixture
def vpc_id(ec2):
    v = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    yield v
    for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [v]}])["SecurityGroups"]:
        if g["GroupName"] != "default":
            for p in ("IpPermissions",):
                if g[p]:
                    ec2.revoke_security_group_ingress(GroupId=g["GroupId"], IpPermissions=g[p])
    for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [v]}])["SecurityGroups"]:
        if g["GroupName"] != "default":
            try:
                ec2.delete_security_group(GroupId=g["GroupId"])
            except Exception:
                pass
    try:
        ec2.delete_vpc(VpcId=v)
    except Exception:
        pass


def sg(ec2, vpc_id, name, **kw):
    return ec2.create_security_group(GroupName=name, Description="conformance " + name, VpcId=vpc_id, **kw)


def test_create_describe(ec2, vpc_id, name):
    r = sg(ec2, vpc_id, name, TagSpecifications=[{"ResourceType": "security-group",
                                                   "Tags": [{"Key": "env", "Value": "test"}]}])
    gid = r["GroupId"]
    assert SG_ID.match(gid)
    assert r["Tags"] == [{"Key": "env", "Value": "test"}]
    g = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    assert g["GroupName"] == name and g["VpcId"] == vpc_id and g["OwnerId"] == "000000000000"
    assert g["Description"] == "conformance " + name
    assert g["IpPermissions"] == []
    # new groups allow all egress
    assert len(g["IpPermissionsEgress"]) == 1
    e = g["IpPermissionsEgress"][0]
    assert e["IpProtocol"] == "-1" and e["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    assert "FromPort" not in e and "ToPort" not in e
    assert not e.get("Ipv6Ranges") and not e.get("UserIdGroupPairs") and not e.get("PrefixListIds")
    by_name = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    assert [x["GroupId"] for x in by_name] == [gid]
    by_tag = ec2.describe_security_groups(Filters=[{"Name": "tag:env", "Values": ["test"]},
                                                   {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    assert [x["GroupId"] for x in by_tag] == [gid]
    expect("InvalidGroup.Duplicate", sg, ec2, vpc_id, name)


def test_not_found_malformed(ec2):
    expect("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=["sg-0123456789abcdef0"])
    expect("InvalidGroupId.Malformed", ec2.describe_security_groups, GroupIds=["sg-zz"])
    expect("InvalidGroup.NotFound", ec2.delete_security_group, GroupId="sg-0123456789abcdef0")


def test_ingress_rules(ec2, vpc_id, name):
    gid = sg(ec2, vpc_id, name)["GroupId"]
    other = sg(ec2, vpc_id, name + "-peer")["GroupId"]
    perms = [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.0/24", "Description": "ssh"}]},
        {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8100, "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}]},
        {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": other}]},
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.30.0.0/16"}]},
    ]
    r = ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=perms)
    assert r["Return"] is True
    rules = r["SecurityGroupRules"]
    assert len(rules) == 5
    for x in rules:
        assert SGR_ID.match(x["SecurityGroupRuleId"]) and x["GroupId"] == gid and x["IsEgress"] is False
    g = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    ip = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in g["IpPermissions"]}
    assert ip[("tcp", 22, 22)]["IpRanges"] == [{"CidrIp": "203.0.113.0/24", "Description": "ssh"}]
    assert ip[("tcp", 8000, 8100)]["Ipv6Ranges"] == [{"CidrIpv6": "2001:db8::/32"}]
    assert ip[("icmp", 8, -1)]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    assert [p["GroupId"] for p in ip[("-1", None, None)]["UserIdGroupPairs"]] == [other]
    assert ip[("-1", None, None)]["UserIdGroupPairs"][0]["UserId"] == "000000000000"
    assert ("udp", 53, 53) in ip
    # duplicate
    expect("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=gid,
           IpPermissions=[perms[0]])
    # DescribeSecurityGroupRules
    dr = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]
    ingress = [x for x in dr if not x["IsEgress"]]
    egress = [x for x in dr if x["IsEgress"]]
    assert len(ingress) == 5 and len(egress) == 1
    assert {x["SecurityGroupRuleId"] for x in ingress} == {x["SecurityGroupRuleId"] for x in rules}
    ssh = [x for x in ingress if x.get("FromPort") == 22][0]
    assert ssh["IpProtocol"] == "tcp" and ssh["CidrIpv4"] == "203.0.113.0/24" and ssh["Description"] == "ssh"
    assert ssh["GroupOwnerId"] == "000000000000"
    ref = [x for x in ingress if x["IpProtocol"] == "-1"][0]
    assert ref["ReferencedGroupInfo"]["GroupId"] == other
    one = ec2.describe_security_group_rules(SecurityGroupRuleIds=[ssh["SecurityGroupRuleId"]])["SecurityGroupRules"]
    assert [x["SecurityGroupRuleId"] for x in one] == [ssh["SecurityGroupRuleId"]]
    # paginate the rules
    p1 = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}], MaxResults=5)
    assert len(p1["SecurityGroupRules"]) <= 5 and p1.get("NextToken")
    rest = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": "group-id", "Values": [gid]}], PaginationConfig={"PageSize": 5,
                                                                          "StartingToken": p1["NextToken"]})
    ids = [x["SecurityGroupRuleId"] for x in p1["SecurityGroupRules"]] + \
        [x["SecurityGroupRuleId"] for pg in rest for x in pg["SecurityGroupRules"]]
    assert sorted(ids) == sorted(x["SecurityGroupRuleId"] for x in dr)
    # revoke by permission, then by rule id
    rv = ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perms[0]])
    assert rv["Return"] is True
    expect("InvalidPermission.NotFound", ec2.revoke_security_group_ingress, GroupId=gid, IpPermissions=[perms[0]])
    udp = [x for x in rules if x.get("IpProtocol") == "udp"][0]
    ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[udp["SecurityGroupRuleId"]])
    left = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
    assert {(p["IpProtocol"], p.get("FromPort")) for p in left} == {("tcp", 8000), ("icmp", 8), ("-1", None)}


def test_ingress_bad_input(ec2, vpc_id, name):
    gid = sg(ec2, vpc_id, name)["GroupId"]
    expect("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=gid,
           IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "300.0.0.0/8"}]}])
    expect("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=gid,
           IpPermissions=[{"IpProtocol": "tcp", "FromPort": 100, "ToPort": 99999, "IpRanges": [{"CidrIp": "1.2.3.4/32"}]}])
    expect("InvalidGroup.NotFound", ec2.authorize_security_group_ingress, GroupId="sg-0123456789abcdef0",
           IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "1.2.3.4/32"}]}])


def test_egress_rules(ec2, vpc_id, name):
    gid = sg(ec2, vpc_id, name)["GroupId"]
    allow_all = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[allow_all])
    assert ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissionsEgress"] == []
    expect("InvalidPermission.NotFound", ec2.revoke_security_group_egress, GroupId=gid, IpPermissions=[allow_all])
    https = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    r = ec2.authorize_security_group_egress(GroupId=gid, IpPermissions=[https])
    assert r["Return"] is True and r["SecurityGroupRules"][0]["IsEgress"] is True
    expect("InvalidPermission.Duplicate", ec2.authorize_security_group_egress, GroupId=gid, IpPermissions=[https])
    e = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissionsEgress"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in e] == [("tcp", 443, 443)]
    rv = ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[https])
    assert rv["Return"] is True


def test_delete_in_use_and_default(ec2, vpc_id, name):
    a = sg(ec2, vpc_id, name + "-a")["GroupId"]
    b = sg(ec2, vpc_id, name + "-b")["GroupId"]
    perm = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": a}]}
    ec2.authorize_security_group_ingress(GroupId=b, IpPermissions=[perm])
    expect("DependencyViolation", ec2.delete_security_group, GroupId=a)
    ec2.revoke_security_group_ingress(GroupId=b, IpPermissions=[perm])
    r = ec2.delete_security_group(GroupId=a)
    assert r.get("Return") is True and r.get("GroupId") == a
    expect("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[a])
    default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                    {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
    expect("CannotDelete", ec2.delete_security_group, GroupId=default["GroupId"])


def test_describe_security_groups_pagination(ec2, vpc_id, name):
    ids = {sg(ec2, vpc_id, f"{name}-{i}")["GroupId"] for i in range(7)}
    flt = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name + "-*"]}]
    seen, token, pages = [], None, 0
    while True:
        kw = {"Filters": flt, "MaxResults": 5}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_security_groups(**kw)
        pages += 1
        assert len(r["SecurityGroups"]) <= 5
        seen += [g["GroupId"] for g in r["SecurityGroups"]]
        token = r.get("NextToken")
        if not token:
            break
    assert pages >= 2 and sorted(seen) == sorted(ids)
    import harness

    st, _, body = harness.raw_request(ec2.meta.endpoint_url, {"Action": "DescribeSecurityGroups", "MaxResults": "4"})
    assert st == 400 and harness.error_code(body)[0] == "InvalidParameterValue"
