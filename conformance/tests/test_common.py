"""Shared machinery: query-protocol errors, DryRun, filters, pagination bounds,
request/resource IDs, region and account isolation."""
import re
import uuid

import pytest

import harness
from conftest import expect


def raw(endpoint, params, **kw):
    st, headers, body = harness.raw_request(endpoint, params, **kw)
    return st, harness.error_code(body) if st >= 300 else (None, None), body


def test_unknown_action(endpoint):
    st, (code, msg), _ = raw(endpoint, {"Action": "DescribeUnicorns"})
    assert st == 400 and code == "InvalidAction", (st, code, msg)


def test_missing_action(endpoint):
    st, (code, msg), _ = raw(endpoint, {})
    assert st == 400 and code in ("MissingAction", "InvalidAction"), (st, code, msg)


def test_model_action_not_implemented_is_named(endpoint):
    st, (code, msg), _ = raw(endpoint, {"Action": "DescribeIpamPools"})
    assert 400 <= st < 600 and code, (st, code)
    assert "DescribeIpamPools" in msg, msg


def test_unknown_parameter(endpoint):
    st, (code, msg), _ = raw(endpoint, {"Action": "DescribeVpcs", "Bogus": "1"})
    assert st == 400 and code == "UnknownParameter", (st, code, msg)
    assert "Bogus" in msg


def test_missing_parameter(endpoint):
    st, (code, msg), _ = raw(endpoint, {"Action": "DeleteVpc"})
    assert st == 400 and code == "MissingParameter", (st, code, msg)
    st, (code, msg), _ = raw(endpoint, {"Action": "CreateSubnet", "CidrBlock": "10.0.0.0/24"})
    assert st == 400 and code == "MissingParameter" and ("VpcId" in msg or "vpcId" in msg), (st, code, msg)


@pytest.mark.parametrize("params", [
    {"Action": "DescribeVpcs", "MaxResults": "abc"},
    {"Action": "ModifySubnetAttribute", "SubnetId": "subnet-0123456789abcdef0", "MapPublicIpOnLaunch.Value": "maybe"},
])
def test_wrong_type(endpoint, params):
    st, (code, msg), _ = raw(endpoint, params)
    assert st == 400 and code == "InvalidParameterValue", (st, code, msg)


def test_wrong_version(endpoint):
    st, (code, msg), _ = raw(endpoint, {"Action": "DescribeVpcs", "Version": "1999-01-01"})
    assert st == 400 and code, (st, code, msg)


def test_get_query_string_request(endpoint):
    """EC2 accepts the Query protocol as GET with a signed query string."""
    import urllib.parse

    q = urllib.parse.urlencode({"Action": "DescribeRegions", "Version": "2016-11-15"})
    url = endpoint + "/?" + q
    hdrs = harness.sign("GET", url, b"", {"Host": urllib.parse.urlsplit(endpoint).netloc}, "us-east-1", "test", "test")
    st, h, body = harness.send(endpoint, "GET", "/?" + q, b"", hdrs)
    harness.check_raw("DescribeRegions", st, body, h)
    assert st == 200 and b"us-east-1" in body


def test_dry_run(ec2):
    before = len(ec2.describe_vpcs()["Vpcs"])
    status, msg = expect("DryRunOperation", ec2.create_vpc, CidrBlock="10.50.0.0/16", DryRun=True)
    assert status == 412
    assert len(ec2.describe_vpcs()["Vpcs"]) == before
    status, _ = expect("DryRunOperation", ec2.describe_vpcs, DryRun=True)
    assert status == 412
    status, _ = expect("DryRunOperation", ec2.create_key_pair, KeyName="dry-" + uuid.uuid4().hex[:6], DryRun=True)
    assert status == 412
    status, _ = expect("DryRunOperation", ec2.create_security_group, GroupName="dry", Description="d", DryRun=True)
    assert status == 412
    assert ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["dry"]}])["SecurityGroups"] == []


def test_request_ids_are_uuids(ec2):
    ids = {ec2.describe_regions()["ResponseMetadata"]["RequestId"] for _ in range(3)}
    assert len(ids) == 3
    for i in ids:
        uuid.UUID(i)


def test_resource_id_format(ec2):
    v = ec2.create_vpc(CidrBlock="10.51.0.0/16")["Vpc"]
    assert re.fullmatch(r"vpc-[0-9a-f]{17}", v["VpcId"])
    assert re.fullmatch(r"vpc-cidr-assoc-[0-9a-f]{17}", v["CidrBlockAssociationSet"][0]["AssociationId"])
    ec2.delete_vpc(VpcId=v["VpcId"])


def test_filters_wildcards(ec2):
    tag = "wild-" + uuid.uuid4().hex[:6]
    made = {}
    for suffix, cidr in (("alpha", "10.60.0.0/16"), ("alpine", "10.61.0.0/16"), ("beta", "10.62.0.0/16")):
        made[suffix] = ec2.create_vpc(
            CidrBlock=cidr, TagSpecifications=[{"ResourceType": "vpc",
                                                "Tags": [{"Key": "Name", "Value": f"{tag}-{suffix}"}]}])["Vpc"]["VpcId"]

    def names(*filters):
        vs = ec2.describe_vpcs(Filters=list(filters))["Vpcs"]
        return sorted(next(t["Value"] for t in v["Tags"] if t["Key"] == "Name")[len(tag) + 1:] for v in vs)

    n = lambda *vals: {"Name": "tag:Name", "Values": list(vals)}  # noqa: E731
    assert names(n(f"{tag}-al*")) == ["alpha", "alpine"]
    assert names(n(f"{tag}-alp??")) == ["alpha"]
    assert names(n(f"{tag}-alp???")) == ["alpine"]
    assert names(n(f"{tag}-*a")) == ["alpha", "beta"]
    assert names(n(f"{tag}-beta", f"{tag}-alpha")) == ["alpha", "beta"]           # OR within a filter
    assert names(n(f"{tag}-*"), {"Name": "cidr", "Values": ["10.62.0.0/16"]}) == ["beta"]  # AND across
    assert names(n(f"{tag}-ALPHA")) == []                                           # case-sensitive
    assert names(n(f"{tag}-*"), {"Name": "tag-key", "Values": ["Name"]},
                 {"Name": "tag-value", "Values": [f"{tag}-b*"]}) == ["beta"]
    expect("InvalidParameterValue", ec2.describe_vpcs, Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    for v in made.values():
        ec2.delete_vpc(VpcId=v)


def test_pagination_bounds(ec2):
    made = [ec2.create_vpc(CidrBlock=f"10.70.{i}.0/24")["Vpc"]["VpcId"] for i in range(6)]
    all_ids = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    seen, token = [], None
    for _ in range(50):
        kw = {"MaxResults": 5}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_vpcs(**kw)
        assert len(r["Vpcs"]) <= 5
        seen += [v["VpcId"] for v in r["Vpcs"]]
        token = r.get("NextToken")
        if not token:
            break
    assert len(seen) == len(set(seen)) and set(seen) == all_ids
    ep = ec2.meta.endpoint_url
    for bad in ("4", "1001", "0"):   # botocore checks 5..1000 itself, so send these raw
        st, (code, msg), _ = raw(ep, {"Action": "DescribeVpcs", "MaxResults": bad})
        assert st == 400 and code == "InvalidParameterValue", (bad, st, code, msg)
    # NextToken is opaque and checked
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as ei:
        ec2.describe_vpcs(MaxResults=5, NextToken="garbage")
    assert ei.value.response["Error"]["Code"] in ("InvalidNextToken", "InvalidPaginationToken", "InvalidParameterValue")
    for v in made:
        ec2.delete_vpc(VpcId=v)


def test_region_isolation(ec2, ec2_west):
    v = ec2.create_vpc(CidrBlock="10.80.0.0/16")["Vpc"]["VpcId"]
    expect("InvalidVpcID.NotFound", ec2_west.describe_vpcs, VpcIds=[v])
    d_east = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    d_west = ec2_west.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    assert d_west["VpcId"] != d_east and d_west["CidrBlock"] == "172.31.0.0/16"
    west_subnets = ec2_west.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    assert west_subnets and all(s["AvailabilityZone"].startswith("eu-west-1") for s in west_subnets)
    name = "iso-" + uuid.uuid4().hex[:6]
    ec2.create_key_pair(KeyName=name)
    expect("InvalidKeyPair.NotFound", ec2_west.describe_key_pairs, KeyNames=[name])
    ec2_west.create_key_pair(KeyName=name)  # same name, other region: fine
    ec2.delete_vpc(VpcId=v)


def test_account_isolation(ec2, ec2_other):
    v = ec2.create_vpc(CidrBlock="10.81.0.0/16")["Vpc"]["VpcId"]
    expect("InvalidVpcID.NotFound", ec2_other.describe_vpcs, VpcIds=[v])
    ov = ec2_other.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    assert ov["OwnerId"] == harness.OTHER_ACCOUNT
    assert v not in {x["VpcId"] for x in ec2_other.describe_vpcs()["Vpcs"]}
    expect("InvalidVpcID.NotFound", ec2_other.delete_vpc, VpcId=v)
    assert ec2.describe_vpcs(VpcIds=[v])["Vpcs"][0]["OwnerId"] == "000000000000"
    ec2.delete_vpc(VpcId=v)
