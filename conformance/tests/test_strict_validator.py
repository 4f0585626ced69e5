"""Unit tests for conformance/strict.py: every rule must fire on bad XML and stay
quiet on good XML.  These need no server."""
import pytest

from strict import EC2_NS, StrictViolation, Validator, install

RID = "59dbff89-35bd-4eac-99ed-be5870abcdef"
XH = {"Content-Type": "text/xml;charset=UTF-8"}


@pytest.fixture(scope="module")
def v():
    return Validator()


def vpcs(inner, root="DescribeVpcsResponse", ns=EC2_NS, rid=f"<requestId>{RID}</requestId>"):
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{ns}">{rid}{inner}</{root}>'


GOOD_VPC = (
    "<vpcSet><item><vpcId>vpc-0123456789abcdef0</vpcId><state>available</state>"
    "<cidrBlock>10.0.0.0/16</cidrBlock><isDefault>false</isDefault>"
    "<tagSet><item><key>Name</key><value>x</value></item></tagSet>"
    "<cidrBlockAssociationSet><item><associationId>vpc-cidr-assoc-0123456789abcdef0</associationId>"
    "<cidrBlock>10.0.0.0/16</cidrBlock><cidrBlockState><state>associated</state></cidrBlockState>"
    "</item></cidrBlockAssociationSet></item></vpcSet>"
)


def test_good_describe_vpcs(v):
    assert v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC), XH) == []


def test_good_empty_list_and_self_closed(v):
    assert v.validate("DescribeVpcs", 200, vpcs("<vpcSet/>"), XH) == []


def one(problems, needle):
    assert problems, "expected a problem, got none"
    assert any(needle in p for p in problems), problems


def test_unknown_element(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<state>available", "<bogus>1</bogus><state>available")), XH),
        "not defined by shape")


def test_unknown_top_level_element(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC + "<extra>1</extra>"), XH), "not defined")


def test_missing_item_wrapper(v):
    bad = "<vpcSet><vpcId>vpc-0123456789abcdef0</vpcId></vpcSet>"
    one(v.validate("DescribeVpcs", 200, vpcs(bad), XH), "missing item wrapper")


def test_member_instead_of_item(v):
    bad = GOOD_VPC.replace("<tagSet><item>", "<tagSet><member>").replace("</item></tagSet>", "</member></tagSet>")
    one(v.validate("DescribeVpcs", 200, vpcs(bad), XH), "missing item wrapper")


@pytest.mark.parametrize("val", ["True", "1", "0", "yes", "", " true"])
def test_bad_boolean(v, val):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<isDefault>false", f"<isDefault>{val}")), XH),
        "boolean")


@pytest.mark.parametrize("ts", ["2026-11-26 10:00:00", "1764151200", "2026-11-26T10:00:00Z",
                                "2026-11-26T10:00:00.000+00:00", "Thu, 26 Nov 2026 10:00:00 GMT",
                                "2026-13-26T10:00:00.000Z"])
def test_bad_timestamp(v, ts):
    body = vpcs(f"<keySet><item><keyName>k</keyName><createTime>{ts}</createTime></item></keySet>",
                root="DescribeKeyPairsResponse")
    one(v.validate("DescribeKeyPairs", 200, body, XH), "timestamp")


def test_good_timestamp(v):
    body = vpcs("<keySet><item><keyName>k</keyName><createTime>2026-11-26T10:00:00.000Z</createTime></item></keySet>",
                root="DescribeKeyPairsResponse")
    assert v.validate("DescribeKeyPairs", 200, body, XH) == []


def test_iso_style_relaxed():
    v = Validator(timestamp_style="iso")
    body = vpcs("<keySet><item><keyName>k</keyName><createTime>2026-11-26T10:00:00Z</createTime></item></keySet>",
                root="DescribeKeyPairsResponse")
    assert v.validate("DescribeKeyPairs", 200, body, XH) == []


@pytest.mark.parametrize("val", ["abc", "1.5", "", "99999999999", "0x10"])
def test_bad_integer(v, val):
    body = vpcs(f"<subnetSet><item><subnetId>subnet-0123456789abcdef0</subnetId>"
                f"<availableIpAddressCount>{val}</availableIpAddressCount></item></subnetSet>",
                root="DescribeSubnetsResponse")
    one(v.validate("DescribeSubnets", 200, body, XH), "integer")


def test_bad_enum(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<state>available", "<state>Available")), XH),
        "not in enum")
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<state>associated", "<state>bogus")), XH),
        "not in enum")


def test_wrong_root(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC, root="DescribeVpcsResult"), XH), "root element")


def test_wrong_namespace(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC, ns="http://ec2.amazonaws.com/doc/2014-10-01/"), XH),
        "namespace")


def test_no_namespace(v):
    body = f"<DescribeVpcsResponse><requestId>{RID}</requestId>{GOOD_VPC}</DescribeVpcsResponse>"
    one(v.validate("DescribeVpcs", 200, body, XH), "namespace")


def test_missing_request_id(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC, rid=""), XH), "requestId")


def test_request_id_not_uuid(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC, rid="<requestId>abc</requestId>"), XH), "UUID")


def test_duplicate_scalar(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<state>available</state>",
                                                              "<state>available</state><state>available</state>")), XH),
        "repeated")


def test_scalar_with_children(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<vpcId>vpc-0123456789abcdef0</vpcId>",
                                                              "<vpcId><x/></vpcId>")), XH), "child elements")


def test_text_in_structure(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<item><vpcId>", "<item>junk<vpcId>", 1)), XH),
        "unexpected text")


def test_not_xml(v):
    one(v.validate("DescribeVpcs", 200, b"{\"Vpcs\": []}", XH), "well-formed")


def test_content_type(v):
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC), {"Content-Type": "application/json"}), "Content-Type")


def test_no_output_shape_return(v):
    ok = vpcs("<return>true</return>", root="CreateTagsResponse")
    assert v.validate("CreateTags", 200, ok, XH) == []
    one(v.validate("CreateTags", 200, vpcs("<return>True</return>", root="CreateTagsResponse"), XH), "boolean")
    one(v.validate("CreateTags", 200, vpcs("<foo>1</foo>", root="CreateTagsResponse"), XH), "not defined")
    strict = Validator(allow_return_without_output=False)
    one(strict.validate("CreateTags", 200, ok, XH), "not defined")


# ---------------------------------------------------------------- errors
def err(inner=None, rid=f"<RequestID>{RID}</RequestID>"):
    if inner is None:
        inner = "<Errors><Error><Code>InvalidVpcID.NotFound</Code><Message>nope</Message></Error></Errors>"
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{inner}{rid}</Response>'


def test_good_error(v):
    assert v.validate("DescribeVpcs", 400, err(), XH) == []


def test_error_missing_request_id(v):
    one(v.validate("DescribeVpcs", 400, err(rid=""), XH), "RequestID")


def test_error_lowercase_request_id(v):
    one(v.validate("DescribeVpcs", 400, err(rid=f"<requestId>{RID}</requestId>"), XH), "requestId")


def test_error_missing_code(v):
    one(v.validate("DescribeVpcs", 400, err("<Errors><Error><Message>m</Message></Error></Errors>"), XH), "Code")


def test_error_empty_code(v):
    one(v.validate("DescribeVpcs", 400, err("<Errors><Error><Code></Code><Message>m</Message></Error></Errors>"), XH),
        "empty")


def test_error_extra_element(v):
    one(v.validate("DescribeVpcs", 400, err("<Errors><Error><Code>X</Code><Message>m</Message><Type>Sender</Type>"
                                            "</Error></Errors>"), XH), "unexpected element")


def test_error_no_errors_wrapper(v):
    one(v.validate("DescribeVpcs", 400, err("<Error><Code>X</Code><Message>m</Message></Error>"), XH), "Errors")


def test_error_with_namespace(v):
    body = f'<Response xmlns="{EC2_NS}"><Errors><Error><Code>X</Code><Message>m</Message></Error></Errors>' \
           f"<RequestID>{RID}</RequestID></Response>"
    one(v.validate("DescribeVpcs", 400, body, XH), "without namespace")


def test_error_body_with_200(v):
    one(v.validate("DescribeVpcs", 200, err(), XH), "error envelope")


def test_success_body_with_error_status(v):
    one(v.validate("DescribeVpcs", 400, vpcs(GOOD_VPC), XH), "error envelope")


# ---------------------------------------------------------------- hook
def test_hook_raises_through_botocore():
    """The before-parse hook sees the raw body and fails the call."""
    import boto3
    from botocore.awsrequest import AWSResponse

    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test", endpoint_url="http://127.0.0.1:9")

    class Raw:
        def __init__(self, body):
            self._b = body

        def stream(self, **kw):
            yield self._b

        def read(self, *a, **kw):
            return self._b

    body = vpcs("<vpcSet><vpcId>vpc-1</vpcId></vpcSet>").encode()

    def fake_send(request, **kw):
        return AWSResponse(request.url, 200, {"Content-Type": "text/xml;charset=UTF-8"}, Raw(body))

    client.meta.events.register("before-send.ec2.DescribeVpcs", fake_send)
    from strict import Recorder
    rec = Recorder()
    install(client, rec)
    with pytest.raises(StrictViolation, match="missing item wrapper"):
        client.describe_vpcs()
    assert rec.checked == 1 and rec.problems


def test_enum_exception_is_narrow(v):
    body = vpcs("<internetGatewaySet><item><internetGatewayId>igw-0123456789abcdef0</internetGatewayId>"
                "<attachmentSet><item><vpcId>vpc-0123456789abcdef0</vpcId><state>{}</state></item></attachmentSet>"
                "</item></internetGatewaySet>", root="DescribeInternetGatewaysResponse")
    assert v.validate("DescribeInternetGateways", 200, body.format("available"), XH) == []
    assert v.validate("DescribeInternetGateways", 200, body.format("attached"), XH) == []
    one(v.validate("DescribeInternetGateways", 200, body.format("up"), XH), "not in enum")
    # 'available' is still rejected where the enum does not allow it
    one(v.validate("DescribeVpcs", 200, vpcs(GOOD_VPC.replace("<state>associated", "<state>available")), XH),
        "not in enum")


# ------------------------------------------------------------ query protocol (IAM)
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


@pytest.fixture(scope="module")
def iam_v():
    import botocore.session

    return Validator(service_model=botocore.session.get_session().get_service_model("iam"))


ROLE = (
    "<Role><Path>/</Path><RoleName>web</RoleName><RoleId>AROAAAAAAAAAAAAAAAAAA</RoleId>"
    "<Arn>arn:aws:iam::000000000000:role/web</Arn><CreateDate>2026-11-26T10:00:00Z</CreateDate>"
    "<MaxSessionDuration>3600</MaxSessionDuration>"
    "<Tags><member><Key>a</Key><Value>b</Value></member></Tags></Role>"
)


def iam_doc(op, result=None, rid=RID, ns=IAM_NS, extra=""):
    inner = f"<{op}Result>{result}</{op}Result>" if result is not None else ""
    meta = f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>"
    return f'<{op}Response xmlns="{ns}">{inner}{extra}{meta}</{op}Response>'


def iam_error(code="NoSuchEntity", typ="Sender", extra=""):
    return (f'<ErrorResponse xmlns="{IAM_NS}"><Error><Type>{typ}</Type><Code>{code}</Code>'
            f"<Message>m</Message>{extra}</Error><RequestId>{RID}</RequestId></ErrorResponse>")


def test_iam_good_responses(iam_v):
    assert iam_v.validate("GetRole", 200, iam_doc("GetRole", ROLE), XH) == []
    assert iam_v.validate("DeleteRole", 200, iam_doc("DeleteRole"), XH) == []
    lst = f"<Roles>{ROLE.replace('<Role>', '<member>').replace('</Role>', '</member>')}</Roles><IsTruncated>false</IsTruncated>"
    assert iam_v.validate("ListRoles", 200, iam_doc("ListRoles", lst), XH) == []
    assert iam_v.validate("GetRole", 404, iam_error(), XH) == []


def test_iam_envelope_rules(iam_v):
    one(iam_v.validate("GetRole", 200, iam_doc("GetRole", ROLE, ns="urn:x"), XH), "root namespace")
    one(iam_v.validate("GetRole", 200, iam_doc("GetRole", ROLE, rid="nope"), XH), "not a UUID")
    one(iam_v.validate("GetRole", 200, iam_doc("GetRole", ROLE).replace("GetRoleResult", "Result"), XH),
        "expected exactly one GetRoleResult")
    one(iam_v.validate("DeleteRole", 200, iam_doc("DeleteRole", extra="<return>true</return>"), XH),
        "unexpected element 'return'")
    one(iam_v.validate("GetRole", 200, iam_doc("GetRole", ROLE.replace("<member>", "<item>").replace("</member>", "</item>")), XH),
        "missing item wrapper")
    one(iam_v.validate("GetRole", 200, iam_doc("GetRole", ROLE.replace("<RoleName>", "<Bogus/><RoleName>")), XH),
        "not defined by shape")


def test_iam_error_rules(iam_v):
    one(iam_v.validate("GetRole", 404, iam_error(typ="Client"), XH), "not Sender or Receiver")
    one(iam_v.validate("GetRole", 404, iam_error(extra="<Detail/>"), XH), "unexpected element 'Detail'")
    one(iam_v.validate("GetRole", 404, iam_error(code=""), XH), "Code: empty")
    ec2_style = f"<Response><Errors><Error><Code>X</Code><Message>m</Message></Error></Errors><RequestID>{RID}</RequestID></Response>"
    one(iam_v.validate("GetRole", 400, ec2_style, XH), "expected error envelope <ErrorResponse>")
    one(iam_v.validate("GetRole", 200, iam_error(), XH), "body is an error envelope")
