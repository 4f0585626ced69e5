"""Fixtures: one real `ec2d serve` per test session (random port, temp data dir),
boto3 clients with the strict-model hook, and the strict-problem gate that fails
any test during which a response broke the model."""
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402
import strict  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "server: needs a running ec2d")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ops = strict.RECORDER.operations
    if not ops:
        return
    tr = terminalreporter
    tr.write_sep("-", "strict-model check")
    tr.write_line(f"{strict.RECORDER.checked} responses checked, {len(strict.RECORDER.problems)} problems, "
                  f"{len(ops)} operations: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    missing = [a for a in harness.ISSUE2_ACTIONS if a not in ops]
    if missing:
        tr.write_line("issue-2 actions not driven in this run: " + ", ".join(missing))
    else:
        tr.write_line(f"all {len(harness.ISSUE2_ACTIONS)} issue-2 actions were driven and strict-checked")


def pytest_sessionfinish(session, exitstatus):
    """With CONFORMANCE_REQUIRE_COVERAGE=1 (set by conformance/run for the full suite),
    a run that left an issue-2 action undriven fails."""
    if os.environ.get("CONFORMANCE_REQUIRE_COVERAGE") != "1":
        return
    missing = [a for a in harness.ISSUE2_ACTIONS if a not in strict.RECORDER.operations]
    if missing and session.exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def ec2d(tmp_path_factory):
    d = tmp_path_factory.mktemp("ec2d-data")
    srv = harness.Ec2d(
        data_dir=str(d),
        credentials=[f"{harness.OTHER_KEY}:{harness.OTHER_SECRET}:{harness.OTHER_ACCOUNT}"],
        log_path=str(tmp_path_factory.getbasetemp() / "ec2d-session.log"),
    )
    srv.start()
    yield srv
    srv.stop()
    print(f"\n[ec2d session log: {srv.log_path}]")


@pytest.fixture(scope="session")
def endpoint(ec2d):
    return ec2d.url


@pytest.fixture(scope="session")
def ec2(endpoint):
    return harness.client(endpoint, "us-east-1")


@pytest.fixture(scope="session")
def ec2_west(endpoint):
    return harness.client(endpoint, "eu-west-1")


@pytest.fixture(scope="session")
def ec2_other(endpoint):
    return harness.client(endpoint, "us-east-1", key=harness.OTHER_KEY, secret=harness.OTHER_SECRET)


@pytest.fixture(autouse=True)
def strict_gate():
    """Every response seen during the test must have passed the strict check."""
    before = len(strict.RECORDER.problems)
    yield
    new = strict.RECORDER.problems[before:]
    if new:
        lines = "\n".join(f"  {op} HTTP {st}: {p}" for op, st, p, _ in new[:20])
        pytest.fail(f"{len(new)} strict-model problem(s):\n{lines}", pytrace=False)


@pytest.fixture
def name():
    """A unique name for resources created by one test."""
    return "conf-" + uuid.uuid4().hex[:10]


def err(exc_info):
    """(code, http status, message) of a botocore ClientError."""
    e = exc_info.value
    return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
            e.response["Error"].get("Message", ""))


def expect(code, fn, *args, **kwargs):
    """Call fn, assert it fails with the EC2 error `code`; returns (status, message)."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as ei:
        fn(*args, **kwargs)
    got, status, msg = err(ei)
    assert got == code, f"expected {code}, got {got} (HTTP {status}): {msg}"
    assert 400 <= status < 600, status
    assert msg, "error Message is empty"
    return status, msg
