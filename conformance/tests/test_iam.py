"""IAM on ec2d's endpoint (roles, instance profiles) with boto3's `iam` client and
`aws iam`, every response strict-checked against botocore's IAM model; then instance
profiles on instances (RunInstances, Associate/Describe/Replace/Disassociate) with the EC2
client. The credentials an instance's role receives are checked by the Rust integration
test server/tests/iam.rs (signed requests with the session token), since only a guest
could fetch them from IMDS."""
import json
import os
import re
import time
import urllib.parse

import pytest

import harness
from conftest import expect

ACCOUNT = harness.DEFAULT_ACCOUNT
ROLE_ID = re.compile(r"^AROA[A-Z2-7]{17}$")
PROFILE_ID = re.compile(r"^AIPA[A-Z2-7]{17}$")
ASSOC_ID = re.compile(r"^iip-assoc-[0-9a-f]{17}$")
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


@pytest.fixture(scope="module")
def iam(endpoint):
    return harness.iam_client(endpoint)


def make_role(iam, name, path="/"):
    return iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]


def make_profile(iam, name, role=None, path="/"):
    p = iam.create_instance_profile(InstanceProfileName=name, Path=path)["InstanceProfile"]
    if role:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
    return p


# ----------------------------------------------------------------------- roles
def test_role_lifecycle(iam, name):
    before = time.time()
    doc = json.dumps(TRUST, indent=2)  # whitespace and all, as sent
    r = iam.create_role(RoleName=name, Path="/conf/app/", AssumeRolePolicyDocument=doc,
                        Description="conformance role", MaxSessionDuration=7200,
                        Tags=[{"Key": "team", "Value": "infra"}])["Role"]
    assert r["RoleName"] == name and r["Path"] == "/conf/app/"
    assert r["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/conf/app/{name}"
    assert ROLE_ID.match(r["RoleId"]), r["RoleId"]
    assert abs(r["CreateDate"].timestamp() - before) < 60
    # botocore URL-decodes and parses the document; it must come back as sent.
    assert r["AssumeRolePolicyDocument"] == TRUST
    assert r["MaxSessionDuration"] == 7200 and r["Description"] == "conformance role"
    assert r["Tags"] == [{"Key": "team", "Value": "infra"}]

    # Names are case-insensitive in IAM.
    g = iam.get_role(RoleName=name.upper())["Role"]
    assert g["RoleId"] == r["RoleId"] and g["RoleName"] == name
    assert g["RoleLastUsed"] == {}

    listed = iam.list_roles(PathPrefix="/conf/app/")
    assert listed["IsTruncated"] is False
    mine = [x for x in listed["Roles"] if x["RoleName"] == name]
    assert len(mine) == 1 and "Tags" not in mine[0] and "RoleLastUsed" not in mine[0]
    assert mine[0]["AssumeRolePolicyDocument"] == TRUST
    assert all(x["Path"].startswith("/conf/app/") for x in listed["Roles"])
    assert name not in [x["RoleName"] for x in iam.list_roles(PathPrefix="/other/")["Roles"]]

    iam.delete_role(RoleName=name)
    status, msg = expect("NoSuchEntity", iam.get_role, RoleName=name)
    assert status == 404 and msg == f"The role with name {name} cannot be found."
    expect("NoSuchEntity", iam.delete_role, RoleName=name)


def test_role_errors(iam, name):
    make_role(iam, name)
    status, msg = expect("EntityAlreadyExists", make_role, iam, name.upper())
    assert status == 409 and msg == f"Role with name {name.upper()} already exists."
    status, msg = expect("MalformedPolicyDocument", iam.create_role, RoleName=name + "-x",
                         AssumeRolePolicyDocument="this is not json")
    assert status == 400 and msg == "This policy contains invalid Json"
    status, msg = expect("ValidationError", make_role, iam, "has space")
    assert status == 400 and "at 'roleName'" in msg and "regular expression pattern" in msg
    _, msg = expect("ValidationError", make_role, iam, "r" * 65)
    assert "Member must have length less than or equal to 64" in msg
    _, msg = expect("ValidationError", make_role, iam, name + "-p", path="no-slashes")
    assert "at 'path'" in msg
    _, msg = expect("ValidationError", iam.create_role, RoleName=name + "-d",
                    AssumeRolePolicyDocument=json.dumps(TRUST), MaxSessionDuration=50000)
    assert "Member must have value less than or equal to 43200" in msg
    iam.delete_role(RoleName=name)


def test_roles_are_per_account(endpoint, iam, name):
    make_role(iam, name)
    other = harness.iam_client(endpoint, key=harness.OTHER_KEY, secret=harness.OTHER_SECRET)
    expect("NoSuchEntity", other.get_role, RoleName=name)
    r = make_role(other, name)  # the same name is free in another account
    assert r["Arn"] == f"arn:aws:iam::{harness.OTHER_ACCOUNT}:role/{name}"
    other.delete_role(RoleName=name)
    iam.delete_role(RoleName=name)


def test_iam_is_global(endpoint, name):
    """IAM is one per account whichever region the client signs for."""
    east = harness.iam_client(endpoint, "us-east-1")
    west = harness.iam_client(endpoint, "eu-west-1")
    make_role(east, name)
    assert west.get_role(RoleName=name)["Role"]["RoleName"] == name
    west.delete_role(RoleName=name)


def test_list_pagination(iam, name):
    path = f"/{name}/"
    names = sorted(f"{name}-{i}" for i in range(5))
    for n in names:
        make_role(iam, n, path=path)
    p1 = iam.list_roles(PathPrefix=path, MaxItems=2)
    assert p1["IsTruncated"] is True and p1["Marker"]
    p2 = iam.list_roles(PathPrefix=path, MaxItems=2, Marker=p1["Marker"])
    p3 = iam.list_roles(PathPrefix=path, MaxItems=2, Marker=p2["Marker"])
    assert p3["IsTruncated"] is False and "Marker" not in p3
    got = [r["RoleName"] for p in (p1, p2, p3) for r in p["Roles"]]
    assert got == names
    # boto3's paginator drives Marker/IsTruncated itself.
    pages = iam.get_paginator("list_roles").paginate(PathPrefix=path, PaginationConfig={"PageSize": 2})
    assert [r["RoleName"] for pg in pages for r in pg["Roles"]] == names
    expect("ValidationError", iam.list_roles, Marker="not-a-marker")
    for n in names:
        iam.delete_role(RoleName=n)


# ------------------------------------------------------------ instance profiles
def test_instance_profile_lifecycle(iam, name):
    role = make_role(iam, name)
    other_role = make_role(iam, name + "-2")
    p = make_profile(iam, name, path="/conf/")
    assert p["Arn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/conf/{name}"
    assert PROFILE_ID.match(p["InstanceProfileId"]) and p["Roles"] == []

    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    status, msg = expect("LimitExceeded", iam.add_role_to_instance_profile,
                         InstanceProfileName=name, RoleName=other_role["RoleName"])
    assert status == 409 and msg == "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1"
    g = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["RoleId"] for r in g["Roles"]] == [role["RoleId"]]
    assert g["Roles"][0]["AssumeRolePolicyDocument"] == TRUST

    for_role = iam.list_instance_profiles_for_role(RoleName=name)
    assert [x["InstanceProfileName"] for x in for_role["InstanceProfiles"]] == [name]
    assert iam.list_instance_profiles_for_role(RoleName=other_role["RoleName"])["InstanceProfiles"] == []
    listed = iam.list_instance_profiles(PathPrefix="/conf/")["InstanceProfiles"]
    assert name in [x["InstanceProfileName"] for x in listed]

    status, msg = expect("DeleteConflict", iam.delete_role, RoleName=name)
    assert status == 409 and msg == "Cannot delete entity, must remove roles from instance profile first."
    expect("DeleteConflict", iam.delete_instance_profile, InstanceProfileName=name)

    iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
    expect("NoSuchEntity", iam.remove_role_from_instance_profile, InstanceProfileName=name, RoleName=name)
    iam.delete_instance_profile(InstanceProfileName=name)
    status, msg = expect("NoSuchEntity", iam.get_instance_profile, InstanceProfileName=name)
    assert status == 404 and msg == f"Instance Profile {name} cannot be found."
    expect("NoSuchEntity", iam.add_role_to_instance_profile, InstanceProfileName=name, RoleName=name)
    expect("NoSuchEntity", iam.list_instance_profiles_for_role, RoleName=name + "-none")
    iam.delete_role(RoleName=name)
    iam.delete_role(RoleName=other_role["RoleName"])


def test_instance_profile_errors(iam, name):
    make_profile(iam, name)
    status, msg = expect("EntityAlreadyExists", make_profile, iam, name)
    assert status == 409 and msg == f"Instance Profile {name} already exists."
    expect("NoSuchEntity", iam.add_role_to_instance_profile, InstanceProfileName=name, RoleName=name + "-none")
    expect("ValidationError", make_profile, iam, "bad/name")
    iam.delete_instance_profile(InstanceProfileName=name)


# ----------------------------------------------------------- raw protocol and auth
def test_raw_protocol_errors(endpoint):
    status, _, body = harness.raw_request(endpoint, {"Action": "NoSuchThing"}, service="iam")
    assert status == 400 and harness.error_code(body)[0] == "InvalidAction"
    status, _, body = harness.raw_request(endpoint, {"Action": "ListUsers"}, service="iam")
    assert status == 400 and harness.error_code(body)[0] == "UnsupportedOperation"
    status, _, body = harness.raw_request(endpoint, {"Action": "GetRole"}, service="iam")
    code, msg = harness.error_code(body)
    assert (status, code) == (400, "ValidationError") and "Value null at 'roleName'" in msg
    status, _, body = harness.raw_request(endpoint, {"Action": "GetRole", "RoleName": "x", "Bogus": "1"},
                                          service="iam")
    assert status == 400 and harness.error_code(body)[0] == "InvalidInput"
    # An IAM request with EC2's Version names no operation IAM has.
    status, _, body = harness.raw_request(endpoint, {"Action": "ListRoles", "Version": "2016-11-15"},
                                          service="iam")
    assert status == 400 and harness.error_code(body)[0] == "InvalidAction"


def test_raw_auth_errors_are_iam_shaped(endpoint):
    status, _, body = harness.raw_request(endpoint, {"Action": "ListRoles"}, service="iam",
                                          key="AKIAUNKNOWNKEY000000", secret="x")
    assert (status, harness.error_code(body)[0]) == (403, "InvalidClientTokenId")
    status, _, body = harness.raw_request(endpoint, {"Action": "ListRoles"}, service="iam",
                                          secret="wrong")
    assert (status, harness.error_code(body)[0]) == (403, "SignatureDoesNotMatch")
    # A session token that ec2d never issued, on a temporary-looking key.
    status, _, body = harness.raw_request(endpoint, {"Action": "ListRoles"}, service="iam",
                                          key="ASIAAAAAAAAAAAAAAAAA", secret="x", token="tok")
    assert (status, harness.error_code(body)[0]) == (403, "InvalidClientTokenId")
    # The same on EC2 answers EC2's AuthFailure in EC2's envelope.
    status, _, body = harness.raw_request(endpoint, {"Action": "DescribeRegions"},
                                          key="ASIAAAAAAAAAAAAAAAAA", secret="x", token="tok")
    assert (status, harness.error_code(body)[0]) == (401, "AuthFailure")


# ---------------------------------------------------------------------- aws-cli
def test_awscli_iam(endpoint, name):
    def iam(*args):
        return harness.aws(endpoint, *args, service="iam")

    rc, out, err, j = iam("create-role", "--role-name", name, "--path", "/cli/",
                          "--assume-role-policy-document", json.dumps(TRUST))
    assert rc == 0, err
    assert j["Role"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/cli/{name}"
    assert j["Role"]["AssumeRolePolicyDocument"] == TRUST
    rc, _, err, j = iam("get-role", "--role-name", name)
    assert rc == 0, err
    assert j["Role"]["RoleName"] == name
    rc, _, err, j = iam("list-roles", "--path-prefix", "/cli/")
    assert rc == 0, err
    assert name in [r["RoleName"] for r in j["Roles"]]
    rc, _, err, j = iam("create-instance-profile", "--instance-profile-name", name)
    assert rc == 0, err
    assert PROFILE_ID.match(j["InstanceProfile"]["InstanceProfileId"])
    rc, out, err, _ = iam("add-role-to-instance-profile", "--instance-profile-name", name, "--role-name", name)
    assert rc == 0, err
    rc, _, err, j = iam("list-instance-profiles-for-role", "--role-name", name)
    assert rc == 0, err
    assert [p["InstanceProfileName"] for p in j["InstanceProfiles"]] == [name]
    rc, _, err, j = iam("get-instance-profile", "--instance-profile-name", name)
    assert rc == 0 and j["InstanceProfile"]["Roles"][0]["RoleName"] == name, err
    rc, _, err, j = iam("list-instance-profiles")
    assert rc == 0 and name in [p["InstanceProfileName"] for p in j["InstanceProfiles"]], err
    rc, _, err, _ = iam("delete-role", "--role-name", name)
    assert rc != 0 and "DeleteConflict" in err
    for args in (("remove-role-from-instance-profile", "--instance-profile-name", name, "--role-name", name),
                 ("delete-instance-profile", "--instance-profile-name", name),
                 ("delete-role", "--role-name", name)):
        rc, _, err, _ = iam(*args)
        assert rc == 0, (args, err)
    rc, _, err, _ = iam("get-role", "--role-name", name)
    assert rc != 0 and "NoSuchEntity" in err and f"The role with name {name} cannot be found." in err


# ------------------------------------------------------ instance profiles on instances
@pytest.fixture(scope="module")
def engine(ec2d):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: instances need the sandbox engine, which needs root")
    health = json.loads(ec2d.health)
    if health.get("engine") in (None, "none"):
        pytest.fail(f"no instance engine on this host: {health.get('engineUnavailable')}")
    return health["engine"]


@pytest.fixture(scope="module")
def tiny(engine, ec2):
    imgs = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["ec2d-tiny-x86_64"]}])["Images"]
    assert len(imgs) == 1, imgs
    return imgs[0]["ImageId"]


def wait_state(ec2, iid, want, timeout=60):
    deadline = time.time() + timeout
    s = None
    while time.time() < deadline:
        s = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
        if s == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{iid} is {s}, not {want}, after {timeout}s")


def associations(ec2, iid):
    return ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [iid]}])["IamInstanceProfileAssociations"]


def test_instance_profile_on_instances(iam, ec2, tiny, name):
    make_role(iam, name)
    make_role(iam, name + "-b")
    p1 = make_profile(iam, name, role=name)
    p2 = make_profile(iam, name + "-b", role=name + "-b")
    shown1 = {"Arn": p1["Arn"], "Id": p1["InstanceProfileId"]}
    shown2 = {"Arn": p2["Arn"], "Id": p2["InstanceProfileId"]}

    # Unknown profiles are refused before anything is launched, in EC2's words.
    _, msg = expect("InvalidParameterValue", ec2.run_instances, ImageId=tiny, MinCount=1, MaxCount=1,
                    IamInstanceProfile={"Name": name + "-none"})
    assert msg == f"Value ({name}-none) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
    bad_arn = p1["Arn"] + "-none"
    _, msg = expect("InvalidParameterValue", ec2.run_instances, ImageId=tiny, MinCount=1, MaxCount=1,
                    IamInstanceProfile={"Arn": bad_arn})
    assert msg == f"Value ({bad_arn}) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"

    inst = ec2.run_instances(ImageId=tiny, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                             IamInstanceProfile={"Name": name})["Instances"][0]
    iid = inst["InstanceId"]
    try:
        assert inst["IamInstanceProfile"] == shown1
        d = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert d["IamInstanceProfile"] == shown1
        byarn = ec2.describe_instances(Filters=[{"Name": "iam-instance-profile.arn", "Values": [p1["Arn"]]}])
        assert [i["InstanceId"] for r in byarn["Reservations"] for i in r["Instances"]] == [iid]

        [a] = associations(ec2, iid)
        assert ASSOC_ID.match(a["AssociationId"]) and a["State"] == "associated"
        assert a["IamInstanceProfile"] == shown1 and a["InstanceId"] == iid
        wait_state(ec2, iid, "running")

        _, msg = expect("IncorrectState", ec2.associate_iam_instance_profile, InstanceId=iid,
                        IamInstanceProfile={"Name": name + "-b"})
        assert msg == f"There is an existing association for instance {iid}"

        # Replace: a new association, the other profile.
        r = ec2.replace_iam_instance_profile_association(
            AssociationId=a["AssociationId"], IamInstanceProfile={"Arn": p2["Arn"]})["IamInstanceProfileAssociation"]
        assert r["State"] == "associating" and r["AssociationId"] != a["AssociationId"]
        assert ASSOC_ID.match(r["AssociationId"]) and r["IamInstanceProfile"] == shown2
        got = ec2.describe_iam_instance_profile_associations(AssociationIds=[r["AssociationId"]])
        assert [x["InstanceId"] for x in got["IamInstanceProfileAssociations"]] == [iid]
        expect("InvalidAssociationID.NotFound", ec2.describe_iam_instance_profile_associations,
               AssociationIds=[a["AssociationId"]])
        assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["IamInstanceProfile"] == shown2
        states = ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "state", "Values": ["associated"]}, {"Name": "instance-id", "Values": [iid]}])
        assert len(states["IamInstanceProfileAssociations"]) == 1

        # Disassociate: gone from the instance and from the associations.
        dis = ec2.disassociate_iam_instance_profile(AssociationId=r["AssociationId"])["IamInstanceProfileAssociation"]
        assert dis["State"] == "disassociating" and dis["AssociationId"] == r["AssociationId"]
        assert associations(ec2, iid) == []
        assert "IamInstanceProfile" not in ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        expect("InvalidAssociationID.NotFound", ec2.disassociate_iam_instance_profile,
               AssociationId=r["AssociationId"])
        expect("InvalidParameterValue", ec2.disassociate_iam_instance_profile, AssociationId=iid)

        # Associate on a running instance, by ARN.
        n = ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile={"Arn": p1["Arn"]})
        n = n["IamInstanceProfileAssociation"]
        assert n["State"] == "associating" and n["IamInstanceProfile"] == shown1
        assert [x["State"] for x in associations(ec2, iid)] == ["associated"]

        # aws-cli sees the same.
        rc, _, err, j = harness.aws(ec2d_url(ec2), "describe-iam-instance-profile-associations",
                                    "--association-ids", n["AssociationId"])
        assert rc == 0, err
        assert j["IamInstanceProfileAssociations"][0]["IamInstanceProfile"] == shown1
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
    # A terminated instance keeps no association.
    wait_state(ec2, iid, "terminated")
    assert associations(ec2, iid) == []
    for p in (name, name + "-b"):
        iam.remove_role_from_instance_profile(InstanceProfileName=p, RoleName=p)
        iam.delete_instance_profile(InstanceProfileName=p)
        iam.delete_role(RoleName=p)


def ec2d_url(client):
    u = urllib.parse.urlsplit(client.meta.endpoint_url)
    return f"{u.scheme}://{u.netloc}"


def test_associate_errors(ec2, name):
    expect("InvalidInstanceID.NotFound", ec2.associate_iam_instance_profile,
           InstanceId="i-0123456789abcdef0", IamInstanceProfile={"Name": name})
    expect("InvalidAssociationID.NotFound", ec2.replace_iam_instance_profile_association,
           AssociationId="iip-assoc-0123456789abcdef0", IamInstanceProfile={"Name": name})
    expect("InvalidParameterValue", ec2.describe_iam_instance_profile_associations,
           Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
