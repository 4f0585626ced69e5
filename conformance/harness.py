"""Shared plumbing for the conformance suites and the benchmark.

* ``Ec2d``: start ``ec2d serve`` on a free port with its own data dir, wait for
  ``/_ec2d/health``, stop it (SIGTERM, then SIGKILL) -- or kill -9 it.
* ``client()``: a boto3 EC2 client whose every response goes through strict.py;
  ``iam_client()`` the same for IAM (same endpoint, SigV4 service ``iam``).
* ``aws()``: aws-cli v1 run in-process (awscli.clidriver) with the strict hook
  registered on its botocore session (``service="iam"`` for ``aws iam``).
* ``raw_request()``: a hand-built SigV4-signed (or deliberately broken) Query
  request sent with http.client, for protocol and auth negative cases; its
  response is strict-checked too.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import strict  # noqa: E402

DEFAULT_KEY, DEFAULT_SECRET, DEFAULT_ACCOUNT = "test", "test", "000000000000"
OTHER_KEY, OTHER_SECRET, OTHER_ACCOUNT = "AKIAOTHERACCOUNT0001", "othersecret/with+chars", "111122223333"


# Every action issue 2 lists; the conformance run fails if one was not driven.
ISSUE2_ACTIONS = """
DescribeRegions DescribeAvailabilityZones DescribeAccountAttributes
DescribeInstanceTypes DescribeInstanceTypeOfferings
CreateKeyPair ImportKeyPair DescribeKeyPairs DeleteKeyPair
CreateVpc DescribeVpcs DeleteVpc ModifyVpcAttribute DescribeVpcAttribute
CreateSubnet DescribeSubnets DeleteSubnet ModifySubnetAttribute
CreateSecurityGroup DescribeSecurityGroups DeleteSecurityGroup
AuthorizeSecurityGroupIngress AuthorizeSecurityGroupEgress RevokeSecurityGroupIngress RevokeSecurityGroupEgress
DescribeSecurityGroupRules
CreateInternetGateway AttachInternetGateway DetachInternetGateway DescribeInternetGateways DeleteInternetGateway
CreateRouteTable DescribeRouteTables DeleteRouteTable CreateRoute ReplaceRoute DeleteRoute
AssociateRouteTable DisassociateRouteTable ReplaceRouteTableAssociation
CreateTags DeleteTags DescribeTags
""".split()


def find_binary():
    env = os.environ.get("EC2D_BIN")
    if env:
        return env
    for p in ("target/release/ec2d", "target/debug/ec2d"):
        full = os.path.join(REPO, p)
        if os.path.exists(full):
            return full
    raise FileNotFoundError("ec2d binary not found: build with `cargo build --release -p ec2d` or set EC2D_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ec2d:
    def __init__(self, data_dir=None, port=None, credentials=(), binary=None, log_path=None, extra_args=()):
        self.binary = binary or find_binary()
        self.extra_args = list(extra_args)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="ec2d-conf-")
        self.port = port or free_port()
        self.credentials = list(credentials)
        self.log_path = log_path or os.path.join(self.data_dir, "..", f"ec2d-{os.path.basename(self.data_dir)}.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def link_cached_images(self):
        """Links the tiny AMI built once by conformance/run (in $EC2D_IMAGE_CACHE) into this
        server's data directory, so no test's first RunInstances waits for a build (ec2d still
        checks the copy's recipe version and hash, and builds its own when they differ)."""
        cache = os.path.join(os.environ.get("EC2D_IMAGE_CACHE", ""), "images")
        if not os.environ.get("EC2D_IMAGE_CACHE") or not os.path.isdir(cache):
            return
        mine = os.path.join(self.data_dir, "images")
        os.makedirs(mine, exist_ok=True)
        for name in os.listdir(cache):
            link = os.path.join(mine, name)
            if name.startswith("tiny-") and not os.path.lexists(link):
                os.symlink(os.path.join(cache, name), link)

    def start(self, timeout=30):
        if os.path.isdir(self.data_dir):
            self.link_cached_images()
        args = [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir]
        for c in self.credentials:
            args += ["--credentials", c]
        args += self.extra_args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ec2d exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/_ec2d/health")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200:
                    self.health = body
                    return self
                last = f"HTTP {r.status}"
            except OSError as e:
                last = e
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ec2d not healthy after {timeout}s ({last}); log:\n{self.log_tail()}")

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        self.proc = None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def instance_server(tmp_path_factory, name, engine=None, credentials=(), prepare=None):
    """A module's own ec2d that runs instances: a generator for a pytest fixture
    (`yield from instance_server(...)`). Fails, never skips, when the server has no instance
    engine (or not `engine`), and stops the server afterwards. `prepare(srv)` runs before start,
    with the data directory made; `srv.tmp` is a scratch directory for the module."""
    import pytest

    d = tmp_path_factory.mktemp(f"ec2d-{name}")
    extra = ["--engine", engine] if engine else []
    srv = Ec2d(data_dir=str(d / "data"), log_path=str(d / "ec2d.log"), credentials=credentials, extra_args=extra)
    os.makedirs(srv.data_dir)
    if prepare:
        prepare(srv)
    srv.start()
    got = json.loads(srv.health).get("engine")
    if got in (None, "none") or (engine and got != engine):
        srv.stop()
        pytest.fail(f"no {engine or 'instance'} engine on this host: {json.loads(srv.health).get('engineUnavailable')}")
    srv.tmp = d
    try:
        yield srv
    finally:
        srv.stop()
        print(f"\n[ec2d {name} log: {srv.log_path}]")


# ------------------------------------------------------------------ clients
def client(endpoint, region="us-east-1", key=DEFAULT_KEY, secret=DEFAULT_SECRET, check=True, recorder=None,
           service="ec2", token=None):
    import boto3
    from botocore.config import Config

    c = boto3.client(
        service, region_name=region, endpoint_url=endpoint, aws_access_key_id=key,
        aws_secret_access_key=secret, aws_session_token=token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=120),
    )
    if check:
        strict.install(c, recorder)
    return c


def iam_client(endpoint, region="us-east-1", **kw):
    """A boto3 IAM client for ec2d's endpoint, strict-checked against the IAM model."""
    return client(endpoint, region, service="iam", **kw)


def aws(endpoint, *args, region="us-east-1", key=DEFAULT_KEY, secret=DEFAULT_SECRET, check=True, service="ec2"):
    """Run `aws --endpoint-url ENDPOINT SERVICE ARGS...` in-process. Returns (rc, stdout, stderr, json|None)."""
    from awscli.clidriver import create_clidriver

    env = {
        "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": "",
    }
    saved = {k: os.environ.get(k) for k in list(env) + ["AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    out, err = io.StringIO(), io.StringIO()
    try:
        driver = create_clidriver()
        import logging

        for lg in ("awscli", "botocore", "urllib3"):
            logging.getLogger(lg).setLevel(logging.WARNING)
        if check:
            strict.install(driver.session)
        argv = ["--endpoint-url", endpoint, service, *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = driver.main(argv)
            except SystemExit as e:  # argparse errors
                rc = e.code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    so = out.getvalue()
    if "StrictViolation" in err.getvalue() or "strict-model problems" in err.getvalue():
        raise strict.StrictViolation(err.getvalue())
    parsed = None
    try:
        parsed = json.loads(so) if so.strip() else None
    except ValueError:
        parsed = None
    return rc, so, err.getvalue(), parsed


# --------------------------------------------------------------- raw query
def sign(method, url, body, headers, region, key, secret, when=None, service="ec2", token=None):
    """SigV4-sign a request with botocore; returns the final headers dict."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    auth = SigV4Auth(Credentials(key, secret, token), service, region)
    if when is not None:
        # botocore.auth reads the clock through utils.get_current_datetime
        import botocore.auth as ba

        real = ba.get_current_datetime
        ba.get_current_datetime = lambda *a, **k: when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        try:
            auth.add_auth(req)
        finally:
            ba.get_current_datetime = real
    else:
        auth.add_auth(req)
    return dict(req.headers.items())


def presign(url, params, region, key, secret, expires=300):
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    full = url + "/?" + urllib.parse.urlencode(params)
    req = AWSRequest(method="GET", url=full, headers={})
    SigV4QueryAuth(Credentials(key, secret), "ec2", region, expires=expires).add_auth(req)
    return req.url


def send(url, method, path, body=b"", headers=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        c.request(method, path, body=body or None, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def raw_request(endpoint, params, region="us-east-1", key=DEFAULT_KEY, secret=DEFAULT_SECRET, when=None,
                mutate=None, sign_it=True, check_op=None, service="ec2", token=None):
    """POST a Query request (EC2's, or IAM's with ``service="iam"``).
    ``mutate(body, headers) -> (body, headers)`` runs after signing.

    The response is checked by strict.py against ``check_op`` (default: the Action,
    if it is a model operation; otherwise only as an error envelope)."""
    if "Version" not in params:
        params = {**params, "Version": "2010-05-08" if service == "iam" else "2016-11-15"}
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    u = urllib.parse.urlsplit(endpoint)
    headers["Host"] = u.netloc
    if token is not None:
        headers["X-Amz-Security-Token"] = token
    if sign_it:
        headers = sign("POST", endpoint + "/", body, headers, region, key, secret, when=when, service=service,
                       token=token)
    if mutate:
        body, headers = mutate(body, headers)
    status, rh, rb = send(endpoint, "POST", "/", body, headers)
    check_raw(params.get("Action"), status, rb, rh, check_op, service=service)
    return status, rh, rb


_MODELS = {}


def check_raw(action, status, body, headers, op=None, service="ec2"):
    """Strict-check a response obtained outside botocore, recording into strict.RECORDER."""
    m = _model(service)
    v = strict._validator_for(m)
    name = op or action or "(no Action)"
    if name in m.operation_names:
        probs = v.validate(name, status, body, headers)
    elif status < 300:
        probs = [f"HTTP {status} for unknown action {name}"]
    elif v.query:
        probs = v.validate_query_error_envelope(body)
    else:
        probs = v.validate_error_envelope(body)
    with strict.RECORDER._lock:
        strict.RECORDER.checked += 1
        strict.RECORDER.operations[name] = strict.RECORDER.operations.get(name, 0) + 1
        for p in probs:
            strict.RECORDER.problems.append((name, status, p, body))
    if probs:
        raise strict.StrictViolation(f"{name} HTTP {status}: {probs}\nbody: {body[:1500]!r}")


def _model(service="ec2"):
    if service not in _MODELS:
        import botocore.session

        _MODELS[service] = botocore.session.get_session().get_service_model(service)
    return _MODELS[service]


def _ec2_model():
    return _model("ec2")


def error_code(body):
    """(Code, Message) of an EC2 or IAM error document."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    e = root.find("Errors/Error")
    if e is None:
        e = root.find("{*}Error")
    return (e.findtext("{*}Code") or e.findtext("Code"), e.findtext("{*}Message") or e.findtext("Message")) \
        if e is not None else (None, None)


def utcnow():
    return dt.datetime.now(dt.timezone.utc)
