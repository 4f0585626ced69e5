"""DescribeRegions, DescribeAvailabilityZones, DescribeAccountAttributes,
DescribeInstanceTypes, DescribeInstanceTypeOfferings."""
import re

import pytest

from conftest import expect


def test_describe_regions(ec2):
    regions = ec2.describe_regions()["Regions"]
    names = {r["RegionName"] for r in regions}
    assert {"us-east-1", "eu-west-1", "us-west-2"} <= names
    for r in regions:
        assert r["Endpoint"], r
        assert r.get("OptInStatus") in ("opt-in-not-required", "opted-in", "not-opted-in"), r
    one = ec2.describe_regions(RegionNames=["eu-west-1"])["Regions"]
    assert [r["RegionName"] for r in one] == ["eu-west-1"]
    f = ec2.describe_regions(Filters=[{"Name": "region-name", "Values": ["us-*"]}])["Regions"]
    assert f and all(r["RegionName"].startswith("us-") for r in f)
    assert {r["RegionName"] for r in f} == {n for n in names if n.startswith("us-")}


@pytest.mark.parametrize("region,prefix", [("us-east-1", "use1-az"), ("eu-west-1", "euw1-az")])
def test_describe_availability_zones(endpoint, region, prefix):
    import harness

    c = harness.client(endpoint, region)
    zones = c.describe_availability_zones()["AvailabilityZones"]
    assert len(zones) >= 3
    for z in zones:
        assert z["RegionName"] == region
        assert re.fullmatch(re.escape(region) + r"[a-z]", z["ZoneName"]), z
        assert z["ZoneId"].startswith(prefix), z
        assert z["State"] == "available"
        assert z.get("ZoneType", "availability-zone") == "availability-zone"
    assert len({z["ZoneId"] for z in zones}) == len(zones)
    first = zones[0]["ZoneName"]
    only = c.describe_availability_zones(ZoneNames=[first])["AvailabilityZones"]
    assert [z["ZoneName"] for z in only] == [first]
    byid = c.describe_availability_zones(ZoneIds=[zones[1]["ZoneId"]])["AvailabilityZones"]
    assert [z["ZoneName"] for z in byid] == [zones[1]["ZoneName"]]
    flt = c.describe_availability_zones(Filters=[{"Name": "zone-name", "Values": [f"{region}?"]}])
    assert len(flt["AvailabilityZones"]) == len(zones)


def test_describe_availability_zones_unknown(ec2):
    expect("InvalidParameterValue", ec2.describe_availability_zones, ZoneNames=["us-east-1q"])


def test_describe_account_attributes(ec2):
    attrs = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
             for a in ec2.describe_account_attributes()["AccountAttributes"]}
    assert attrs.get("supported-platforms") == ["VPC"], attrs
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert attrs.get("default-vpc") == [default_vpc[0]["VpcId"]], attrs
    for k in ("max-instances", "vpc-max-security-groups-per-interface", "max-elastic-ips"):
        assert k in attrs and attrs[k][0].isdigit(), (k, attrs)
    only = ec2.describe_account_attributes(AttributeNames=["supported-platforms"])["AccountAttributes"]
    assert [a["AttributeName"] for a in only] == ["supported-platforms"]


# Real EC2 facts: (vCPUs, MiB)
FACTS = {
    "t2.micro": (1, 1024), "t2.large": (2, 8192), "t3.nano": (2, 512), "t3.micro": (2, 1024),
    "t3.xlarge": (4, 16384), "t3a.medium": (2, 4096), "m5.large": (2, 8192), "m5.4xlarge": (16, 65536),
    "m6i.xlarge": (4, 16384), "c5.large": (2, 4096), "c5.9xlarge": (36, 73728), "c6i.2xlarge": (8, 16384),
    "r5.large": (2, 16384), "r5.2xlarge": (8, 65536),
}


def test_describe_instance_types_facts(ec2):
    got = ec2.describe_instance_types(InstanceTypes=list(FACTS))["InstanceTypes"]
    by = {t["InstanceType"]: t for t in got}
    assert set(by) == set(FACTS)
    for name, (vcpu, mib) in FACTS.items():
        t = by[name]
        assert t["VCpuInfo"]["DefaultVCpus"] == vcpu, name
        assert t["MemoryInfo"]["SizeInMiB"] == mib, name
        assert "x86_64" in t["ProcessorInfo"]["SupportedArchitectures"], name
        assert t["NetworkInfo"]["NetworkPerformance"], name
        assert t["NetworkInfo"]["MaximumNetworkInterfaces"] >= 2, name
        assert t["EbsInfo"]["EbsOptimizedSupport"] in ("default", "supported", "unsupported"), name
        assert t["InstanceStorageSupported"] is False, name
        assert t["CurrentGeneration"] is True, name
    assert by["m5.large"]["EbsInfo"]["EbsOptimizedSupport"] == "default"
    assert by["t3.micro"]["BurstablePerformanceSupported"] is True
    assert by["m5.large"]["BurstablePerformanceSupported"] is False


def test_describe_instance_types_families_complete(ec2):
    pages = ec2.get_paginator("describe_instance_types").paginate(PaginationConfig={"PageSize": 20})
    names = [t["InstanceType"] for p in pages for t in p["InstanceTypes"]]
    assert len(names) == len(set(names)), "pagination repeated an item"
    fams = {n.split(".")[0] for n in names}
    assert {"t2", "t3", "t3a", "m5", "m6i", "c5", "c6i", "r5"} <= fams
    t3 = {n for n in names if n.startswith("t3.")}
    assert t3 == {"t3.nano", "t3.micro", "t3.small", "t3.medium", "t3.large", "t3.xlarge", "t3.2xlarge"}


def test_describe_instance_types_filters(ec2):
    r = ec2.describe_instance_types(Filters=[{"Name": "instance-type", "Values": ["c6i.*"]}])
    names = {t["InstanceType"] for t in r["InstanceTypes"]}
    assert names and all(n.startswith("c6i.") for n in names)
    assert "c6i.large" in names
    r = ec2.describe_instance_types(Filters=[{"Name": "instance-type", "Values": ["t3.*"]},
                                             {"Name": "vcpu-info.default-vcpus", "Values": ["4"]}])
    assert {t["InstanceType"] for t in r["InstanceTypes"]} == {"t3.xlarge"}


def test_describe_instance_types_unknown(ec2):
    expect("InvalidInstanceType", ec2.describe_instance_types, InstanceTypes=["t3.bogus"])


def test_describe_instance_type_offerings(ec2):
    reg = ec2.describe_instance_type_offerings(Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}])
    offs = reg["InstanceTypeOfferings"]
    assert offs == [{"InstanceType": "t3.micro", "LocationType": "region", "Location": "us-east-1"}]
    az = ec2.describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}])
    locs = {o["Location"] for o in az["InstanceTypeOfferings"]}
    zones = {z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
    assert locs and locs <= zones and len(locs) >= 3
    azid = ec2.describe_instance_type_offerings(
        LocationType="availability-zone-id",
        Filters=[{"Name": "location", "Values": ["use1-az1"]}, {"Name": "instance-type", "Values": ["m5.*"]}])
    o = azid["InstanceTypeOfferings"]
    assert o and all(x["Location"] == "use1-az1" and x["InstanceType"].startswith("m5.") for x in o)
    assert all(x["LocationType"] == "availability-zone-id" for x in o)


def test_describe_instance_type_offerings_paginates(ec2):
    first = ec2.describe_instance_type_offerings(MaxResults=5)
    assert len(first["InstanceTypeOfferings"]) == 5 and first.get("NextToken")
    second = ec2.describe_instance_type_offerings(MaxResults=5, NextToken=first["NextToken"])
    a = {o["InstanceType"] for o in first["InstanceTypeOfferings"]}
    b = {o["InstanceType"] for o in second["InstanceTypeOfferings"]}
    assert not a & b
