"""SigV4 verification, positive and negative, on hand-built requests.

Expected codes: EC2's API reference ("Error codes for the Amazon EC2 API",
common client errors) lists AuthFailure for credentials that cannot be
validated -- EC2 answers both an unknown access key and a signature mismatch
with AuthFailure / "AWS was not able to validate the provided access
credentials" (HTTP 401), rather than the SignatureDoesNotMatch that other
Query services use.  RequestExpired (15-minute window), IncompleteSignature and
MissingAuthenticationToken come from the AWS common-errors list.
"""
import datetime as dt
import urllib.parse

import pytest

import harness

PARAMS = {"Action": "DescribeVpcs", "Version": "2016-11-15"}


def call(endpoint, **kw):
    st, h, body = harness.raw_request(endpoint, dict(PARAMS), **kw)
    code, msg = harness.error_code(body) if st >= 300 else (None, None)
    return st, code, msg, body


def test_valid_signature(endpoint):
    st, code, _, body = call(endpoint)
    assert st == 200 and code is None and b"vpcSet" in body


def test_extra_credentials_account(endpoint):
    st, code, _, body = call(endpoint, key=harness.OTHER_KEY, secret=harness.OTHER_SECRET)
    assert st == 200 and harness.OTHER_ACCOUNT.encode() in body


def test_wrong_secret(endpoint):
    st, code, msg, _ = call(endpoint, secret="not-the-secret")
    assert code == "AuthFailure" and st in (401, 403), (st, code, msg)


def test_unknown_key(endpoint):
    st, code, msg, _ = call(endpoint, key="AKIANOSUCHKEY0000000", secret="whatever")
    assert code == "AuthFailure" and st in (401, 403), (st, code, msg)


@pytest.mark.parametrize("minutes", [-20, 20])
def test_clock_skew(endpoint, minutes):
    when = harness.utcnow() + dt.timedelta(minutes=minutes)
    st, code, msg, _ = call(endpoint, when=when)
    assert code == "RequestExpired" and 400 <= st < 500, (st, code, msg)


def test_small_skew_accepted(endpoint):
    st, code, msg, _ = call(endpoint, when=harness.utcnow() - dt.timedelta(minutes=10))
    assert st == 200, (st, code, msg)


def test_tampered_body(endpoint):
    def mutate(body, headers):
        return body.replace(b"DescribeVpcs", b"DescribeRegions"), headers

    st, code, msg, _ = call(endpoint, mutate=mutate)
    assert code == "AuthFailure" and st in (401, 403), (st, code, msg)


def test_tampered_body_parameter_added(endpoint):
    def mutate(body, headers):
        body = body + b"&VpcId.1=vpc-0123456789abcdef0"
        headers = dict(headers)
        headers.pop("Content-Length", None)
        return body, headers

    st, code, msg, _ = call(endpoint, mutate=mutate)
    assert code == "AuthFailure" and st in (401, 403), (st, code, msg)


def test_tampered_signed_header(endpoint):
    def mutate(body, headers):
        h = dict(headers)
        assert "content-type" in h["Authorization"].lower()  # it is among SignedHeaders
        h["Content-Type"] = "application/x-www-form-urlencoded"
        return body, h

    st, code, msg, _ = call(endpoint, mutate=mutate)
    assert code == "AuthFailure" and st in (401, 403), (st, code, msg)


def test_tampered_date_header(endpoint):
    def mutate(body, headers):
        h = dict(headers)
        t = dt.datetime.strptime(h["X-Amz-Date"], "%Y%m%dT%H%M%SZ") - dt.timedelta(seconds=1)
        h["X-Amz-Date"] = t.strftime("%Y%m%dT%H%M%SZ")
        return body, h

    st, code, msg, _ = call(endpoint, mutate=mutate)
    assert code == "AuthFailure" and st in (401, 403), (st, code, msg)


def test_unsigned_extra_header_is_fine(endpoint):
    def mutate(body, headers):
        return body, {**headers, "X-Unsigned-Extra": "1"}

    st, code, msg, _ = call(endpoint, mutate=mutate)
    assert st == 200, (st, code, msg)


def test_missing_auth(endpoint):
    st, code, msg, _ = call(endpoint, sign_it=False)
    assert code == "MissingAuthenticationToken" and 400 <= st < 500, (st, code, msg)


@pytest.mark.parametrize("auth", [
    "AWS4-HMAC-SHA256 garbage",
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, Signature=abcd",  # no SignedHeaders
    "AWS4-HMAC-SHA256 Credential=test/us-east-1/ec2, SignedHeaders=host, Signature=abcd",    # short scope
])
def test_malformed_authorization(endpoint, auth):
    def mutate(body, headers):
        return body, {**headers, "Authorization": auth}

    st, code, msg, _ = call(endpoint, mutate=mutate)
    assert code == "IncompleteSignature" and 400 <= st < 500, (st, code, msg)


def test_presigned_query_string(endpoint):
    url = harness.presign(endpoint, dict(PARAMS), "us-east-1", "test", "test")
    u = urllib.parse.urlsplit(url)
    st, h, body = harness.send(endpoint, "GET", u.path + "?" + u.query)
    harness.check_raw("DescribeVpcs", st, body, h)
    assert st == 200 and b"vpcSet" in body
    # the region comes from the scope: a eu-west-1 presigned URL sees eu-west-1's default VPC
    url_w = harness.presign(endpoint, {"Action": "DescribeAvailabilityZones", "Version": "2016-11-15"},
                            "eu-west-1", "test", "test")
    u = urllib.parse.urlsplit(url_w)
    st, h, body = harness.send(endpoint, "GET", u.path + "?" + u.query)
    harness.check_raw("DescribeAvailabilityZones", st, body, h)
    assert st == 200 and b"eu-west-1a" in body and b"us-east-1a" not in body


def test_presigned_tampered(endpoint):
    url = harness.presign(endpoint, dict(PARAMS), "us-east-1", "test", "test")
    u = urllib.parse.urlsplit(url)
    q = u.query.replace("DescribeVpcs", "DescribeRegions")
    st, h, body = harness.send(endpoint, "GET", u.path + "?" + q)
    harness.check_raw("DescribeRegions", st, body, h)
    assert st in (401, 403) and harness.error_code(body)[0] == "AuthFailure"


def test_presigned_expired(endpoint):
    import botocore.auth as ba

    real = ba.get_current_datetime
    past = (harness.utcnow() - dt.timedelta(minutes=30)).replace(tzinfo=None)
    ba.get_current_datetime = lambda *a, **k: past
    try:
        url = harness.presign(endpoint, dict(PARAMS), "us-east-1", "test", "test", expires=60)
    finally:
        ba.get_current_datetime = real
    u = urllib.parse.urlsplit(url)
    st, h, body = harness.send(endpoint, "GET", u.path + "?" + u.query)
    harness.check_raw("DescribeVpcs", st, body, h)
    assert 400 <= st < 500 and harness.error_code(body)[0] == "RequestExpired", body
