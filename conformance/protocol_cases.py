#!/usr/bin/env python3
"""botocore's EC2 protocol test cases, exported for the Rust side and checked here.

The cases come from the botocore sdist on PyPI (same version as the installed
botocore, 1.43.11): ``tests/unit/protocols/{input,output}/ec2.json`` (the Smithy
generated suites) and ``tests/unit/protocols/legacy/{input,output}/ec2.json``.
They are downloaded with ``pip download --no-binary :all: --no-deps`` into
``conformance/.cache/`` (gitignored) on first use.

Commands (run with the conformance venv's python):

  protocol_cases.py export [--out DIR]
      Fetch if needed and write DIR/ec2-input-cases.json and
      DIR/ec2-output-cases.json (default DIR: conformance/.cache/protocol).
  protocol_cases.py selfcheck
      Check the exported data and this checker against botocore itself:
      botocore must serialize every input case's params to its body, and the
      checker must accept every output case's own response body.
  protocol_cases.py check-output PRODUCED.json
      PRODUCED.json is what the Rust encoder made from each output case:
      {case_id: "<xml>"} or {case_id: {"status": 200, "body": "<xml>"}}.
      Each body is parsed with botocore.parsers.EC2QueryParser using a model
      built from the case's shapes and compared with the case's ``result`` (or,
      for kind "error", with its Code/Message); success bodies are also checked
      by strict.py (namespace free, requestId need not be a UUID).  Cases
      missing from PRODUCED.json are reported as missing (a failure unless
      --allow-missing).
  protocol_cases.py check-input DECODED.json
      DECODED.json is what the Rust decoder made of each input case's body:
      {case_id: <decoded value as JSON, normalized as below>} or
      {case_id: {"error": "..."}}.  Compared with ``expected_decoded``.

File formats
------------
ec2-input-cases.json: a JSON list of objects
  id               unique case id (Smithy id, or "legacy-input-S-C")
  suite            "input/ec2.json" or "legacy/input/ec2.json"
  description      text
  api_version      the Version= the body carries
  operation        operation name (the Action= value)
  shapes           the suite's shape map, exactly as in botocore's model JSON
  input_shape      name of the operation's input shape (or null)
  params           the case's params (botocore's Python-side input)
  body             the serialized query string (application/x-www-form-urlencoded)
  expected_decoded what a decoder must produce from ``body``: params with
                   member names as keys; timestamps as epoch seconds (number);
                   blobs as the decoded bytes as a UTF-8 string; floats as
                   numbers or the strings "NaN", "Infinity", "-Infinity";
                   idempotency tokens auto-filled by the client are included
  botocore_ignored true when botocore's own suite skips this case (its
                   protocol-tests-ignore-list.json); such a case may not match
                   what botocore sends (e.g. Ec2Lists capitalises member names)
  skip_decode      null, or why a decoder cannot be held to the case (host or
                   endpoint traits, client-side compression)

ec2-output-cases.json: a JSON list of objects
  id, suite, description, operation, shapes   as above
  output_shape     name of the output shape (or null)
  kind             "result" (HTTP 200) or "error"
  result           for "result": the value to encode, normalized as above
                   (timestamps epoch seconds, blobs UTF-8 strings, special
                   floats as strings)
  error_code, error_message, error   for "error": the envelope to produce
  response_body    botocore's reference XML for the case
  status_code      the reference HTTP status
  botocore_ignored as above
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")
SUITES = {
    "input/ec2.json": "input",
    "output/ec2.json": "output",
    "legacy/input/ec2.json": "input",
    "legacy/output/ec2.json": "output",
}
# Cases a server-side decoder cannot be held to: they test client behaviour.
SKIP_DECODE = {
    "Ec2QueryEndpointTrait": "tests the client's endpoint host prefix, not the body",
    "Ec2QueryHostWithPath": "tests the client's endpoint path handling",
    "SDKAppliedContentEncoding_ec2Query": "tests client-side gzip request compression",
    "SDKAppendsGzipAndIgnoresHttpProvidedEncoding_ec2Query": "tests client-side gzip request compression",
}


def botocore_version():
    import botocore

    return botocore.__version__


def sdist_dir():
    return os.path.join(CACHE, "botocore-sdist", botocore_version())


def fetch(quiet=False):
    """Download the botocore sdist (once) and extract the protocol test files."""
    ver = botocore_version()
    dest = os.path.join(sdist_dir(), "protocols")
    marker = os.path.join(dest, ".complete")
    if os.path.exists(marker):
        return dest
    dl = os.path.join(CACHE, "downloads")
    os.makedirs(dl, exist_ok=True)
    tgz = os.path.join(dl, f"botocore-{ver}.tar.gz")
    if not os.path.exists(tgz):
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               f"botocore=={ver}", "-d", dl]
        if quiet:
            cmd.insert(4, "-q")
        subprocess.run(cmd, check=True)
    prefix = f"botocore-{ver}/tests/unit/protocols/"
    wanted = list(SUITES) + ["protocol-tests-ignore-list.json"]
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(tgz) as tf:
        for rel in wanted:
            m = tf.getmember(prefix + rel)
            data = tf.extractfile(m).read()
            out = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "wb") as f:
                f.write(data)
    open(marker, "w").close()
    return dest


def _ignored(src):
    with open(os.path.join(src, "protocol-tests-ignore-list.json")) as f:
        full = json.load(f)
    data = full.get("protocols", {}).get("ec2", {})
    general = full.get("general", {})
    return {
        "input": set(data.get("input", {}).get("cases", [])),
        "output": set(data.get("output", {}).get("cases", [])),
        "input_suites": set(general.get("input", {}).get("suites", [])),
        "output_suites": set(general.get("output", {}).get("suites", [])),
    }


def _iter_cases(src, kind):
    for suite, k in SUITES.items():
        if k != kind:
            continue
        with open(os.path.join(src, suite)) as f:
            suites = json.load(f)
        for si, s in enumerate(suites):
            for ci, c in enumerate(s["cases"]):
                cid = c.get("id") or f"{'legacy-' if suite.startswith('legacy') else ''}{kind}-{si}-{ci}"
                yield suite, s, c, cid


def _op_shape(given, key):
    v = given.get(key)
    return v.get("shape") if v else None


def _expected_decoded(case, cid):
    exp = copy.deepcopy(case["params"])
    # A client auto-fills an idempotency token that the params omit; the decoder
    # sees it in the body.
    if cid in ("Ec2ProtocolIdempotencyTokenAutoFill",) or (
        cid.startswith("legacy-input") and not exp and "Token=" in case["serialized"].get("body", "")
    ):
        from urllib.parse import parse_qs

        q = parse_qs(case["serialized"]["body"])
        exp = {("token" if cid.startswith("Ec2") else "Token"): q["Token"][0]}
    return exp


def export(out=None):
    src = fetch()
    ign = _ignored(src)
    out = out or os.path.join(CACHE, "protocol")
    os.makedirs(out, exist_ok=True)
    inputs, outputs = [], []
    for suite, s, c, cid in _iter_cases(src, "input"):
        inputs.append({
            "id": cid,
            "suite": suite,
            "description": c.get("description") or s.get("description"),
            "api_version": s["metadata"].get("apiVersion"),
            "operation": c["given"]["name"],
            "shapes": s["shapes"],
            "input_shape": _op_shape(c["given"], "input"),
            "params": c["params"],
            "body": c["serialized"].get("body", ""),
            "expected_decoded": _expected_decoded(c, cid),
            "botocore_ignored": cid in ign["input"] or s.get("description") in ign["input_suites"],
            "skip_decode": SKIP_DECODE.get(cid),
            "given": c["given"],
            "metadata": s["metadata"],
        })
    for suite, s, c, cid in _iter_cases(src, "output"):
        is_err = "error" in c or "errorCode" in c
        outputs.append({
            "id": cid,
            "suite": suite,
            "description": c.get("description") or s.get("description"),
            "operation": c["given"]["name"],
            "shapes": s["shapes"],
            "output_shape": _op_shape(c["given"], "output"),
            "kind": "error" if is_err else "result",
            "result": c.get("result"),
            "error_code": c.get("errorCode"),
            "error_message": c.get("errorMessage"),
            "error": c.get("error"),
            "response_body": c["response"].get("body", ""),
            "status_code": c["response"].get("status_code", 200),
            "given": c["given"],
            "metadata": s["metadata"],
            "botocore_ignored": cid in ign["output"] or s.get("description") in ign["output_suites"],
        })
    for name, data in (("ec2-input-cases.json", inputs), ("ec2-output-cases.json", outputs)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    return os.path.join(out, "ec2-input-cases.json"), os.path.join(out, "ec2-output-cases.json")


def load(kind):
    path = os.path.join(CACHE, "protocol", f"ec2-{kind}-cases.json")
    if not os.path.exists(path):
        export()
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------ models
def _service(case, op_key):
    from botocore.model import OperationModel, ServiceModel

    meta = dict(case.get("metadata") or {"protocol": "ec2", "apiVersion": case.get("api_version")})
    meta.setdefault("protocol", "ec2")
    desc = {"metadata": meta, "shapes": copy.deepcopy(case["shapes"]),
            "operations": {case["operation"]: case["given"] if "given" in case else {}}}
    model = ServiceModel(desc)
    return model, OperationModel(desc["operations"][case["operation"]], model, case["operation"])


def _normalize(parsed):
    """Botocore-parsed value -> the cases' normalized JSON form."""
    if isinstance(parsed, dict):
        return {k: _normalize(v) for k, v in parsed.items() if k != "ResponseMetadata"}
    if isinstance(parsed, list):
        return [_normalize(v) for v in parsed]
    if isinstance(parsed, (bytes, bytearray)):
        return parsed.decode("utf-8")
    if isinstance(parsed, float):
        if math.isnan(parsed):
            return "NaN"
        if math.isinf(parsed):
            return "Infinity" if parsed > 0 else "-Infinity"
    return parsed


def _ts_parser(value):
    from botocore.utils import parse_timestamp
    from dateutil.tz import tzutc

    return parse_timestamp(value).astimezone(tzutc()).timestamp()


def _equal(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-6)
    return a == b


def parse_output(case, status, body):
    """Parse an XML body for an output case the way boto3 would; returns normalized."""
    from botocore.parsers import EC2QueryParser
    from botocore.awsrequest import HeadersDict

    model, op = _service(case, "output")
    parser = EC2QueryParser(timestamp_parser=_ts_parser)
    resp = {"status_code": status, "headers": HeadersDict({"Content-Type": "text/xml;charset=UTF-8"}),
            "body": body.encode("utf-8") if isinstance(body, str) else body,
            "context": {"operation_name": case["operation"]}}
    parsed = parser.parse(resp, op.output_shape)
    if status >= 300 and "Error" in parsed:
        parsed["Error"] = {k: v for k, v in parsed["Error"].items() if k in ("Code", "Message")}
        code = parsed["Error"].get("Code")
        try:
            eshape = model.shape_for_error_code(code)
        except Exception:
            eshape = None
        if eshape is not None:
            parsed.update(parser.parse(resp, eshape))
    return _normalize(parsed)


def expected_output(case):
    if case["kind"] == "error":
        exp = {"Error": {"Code": case.get("error_code") or "", "Message": case.get("error_message") or ""}}
        exp.update(case.get("error") or {})
        return exp
    return case["result"]


def check_output_case(case, status, body, strict_check=True):
    problems = []
    try:
        got = parse_output(case, status, body)
    except Exception as e:  # noqa: BLE001
        return [f"botocore could not parse it: {type(e).__name__}: {e}"]
    exp = expected_output(case)
    if not _equal(got, exp):
        problems.append(f"parsed {json.dumps(got, sort_keys=True)} != expected {json.dumps(exp, sort_keys=True)}")
    if strict_check:
        from strict import Validator

        model, op = _service(case, "output")
        v = Validator(service_model=model, namespace=None, timestamp_style="iso",
                      require_uuid_request_id=False, ec2_item_lists=False)
        problems += [f"strict: {p}" for p in v.validate(op, status, body, None)]
    return problems


# ---------------------------------------------------------------- commands
def selfcheck():
    """botocore's serializer/parser against the exported cases (validates the export)."""
    from botocore.serialize import EC2Serializer

    fails = 0
    n = 0
    for case in load("input"):
        n += 1
        model, op = _service(case, "input")
        params = copy.deepcopy(case["params"])
        for k, v in list(params.items()):
            if v in ("NaN", "Infinity", "-Infinity"):
                params[k] = float(v)
        req = EC2Serializer().serialize_to_request(params, op)
        from urllib.parse import parse_qsl, urlencode

        body = req["body"]
        if isinstance(body, dict):
            body = urlencode(body)
        elif isinstance(body, bytes):
            body = body.decode()

        if sorted(parse_qsl(body, keep_blank_values=True)) != sorted(parse_qsl(case["body"], keep_blank_values=True)):
            tag = "IGNORED-BY-BOTOCORE" if case["botocore_ignored"] else (
                "client-only" if case["skip_decode"] else "FAIL")
            if tag == "FAIL" and "Token=" in case["body"] and "Token=" in body:
                tag = "ok (random token)"
            if tag == "FAIL":
                fails += 1
            print(f"input  {case['id']}: {tag}: botocore sends {body[:160]!r}, case says {case['body'][:160]!r}")
    print(f"input cases: {n}")
    m = 0
    for case in load("output"):
        m += 1
        probs = check_output_case(case, case["status_code"], case["response_body"], strict_check=False)
        if probs:
            tag = "IGNORED-BY-BOTOCORE" if case["botocore_ignored"] else "FAIL"
            if tag == "FAIL":
                fails += 1
            print(f"output {case['id']}: {tag}: {probs}")
    print(f"output cases: {m}")
    print(f"selfcheck: {n + m - fails} passed, {fails} failed")
    return 1 if fails else 0


def check_output(path, allow_missing=False):
    with open(path) as f:
        produced = json.load(f)
    passed = failed = missing = 0
    for case in load("output"):
        item = produced.get(case["id"])
        if item is None:
            missing += 1
            print(f"MISSING {case['id']}")
            continue
        if isinstance(item, str):
            status, body = (200 if case["kind"] == "result" else case["status_code"]), item
        else:
            status, body = item.get("status", 200), item["body"]
        probs = check_output_case(case, status, body)
        if probs:
            failed += 1
            print(f"FAIL {case['id']}{' (botocore ignores this case)' if case['botocore_ignored'] else ''}:")
            for p in probs:
                print(f"    {p}")
            print(f"    xml: {body[:600]!r}")
        else:
            passed += 1
    print(f"{passed} passed, {failed + (0 if allow_missing else missing)} failed"
          + (f", {missing} skipped" if allow_missing and missing else ""))
    return 1 if failed or (missing and not allow_missing) else 0


def check_input(path, allow_missing=False):
    with open(path) as f:
        decoded = json.load(f)
    passed = failed = skipped = 0
    for case in load("input"):
        if case["skip_decode"]:
            skipped += 1
            continue
        got = decoded.get(case["id"])
        if got is None:
            if allow_missing:
                skipped += 1
                continue
            failed += 1
            print(f"MISSING {case['id']}")
            continue
        if _equal(got, case["expected_decoded"]):
            passed += 1
        else:
            failed += 1
            print(f"FAIL {case['id']}: decoded {json.dumps(got, sort_keys=True)} != "
                  f"expected {json.dumps(case['expected_decoded'], sort_keys=True)} (body {case['body']!r})")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def main(argv=None):
    sys.path.insert(0, HERE)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out")
    sub.add_parser("selfcheck")
    co = sub.add_parser("check-output")
    co.add_argument("produced")
    co.add_argument("--allow-missing", action="store_true")
    ci = sub.add_parser("check-input")
    ci.add_argument("decoded")
    ci.add_argument("--allow-missing", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        for p in export(a.out):
            print(p)
        return 0
    if a.cmd == "selfcheck":
        return selfcheck()
    if a.cmd == "check-output":
        return check_output(a.produced, a.allow_missing)
    return check_input(a.decoded, a.allow_missing)


if __name__ == "__main__":
    sys.exit(main())
