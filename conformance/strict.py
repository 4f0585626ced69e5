"""Strict validation of EC2 Query-protocol XML responses against botocore's model.

botocore's EC2 parser is lenient: it silently ignores elements it does not know,
accepts a list whose children are not named ``item``, reads any boolean that is
not ``true`` as false, and so on.  A server that passes boto3 may still emit XML
that other SDKs (Java, Go, Rust, JS) reject.  This module checks every response
byte-for-byte against the official EC2 model shipped in botocore (the same
botocore 1.43.11 model the server's code generator reads).

Rules for a success response (HTTP 200):
  * root element is ``{Operation}Response`` in namespace
    ``http://ec2.amazonaws.com/doc/2016-11-15/``; every element is in that
    namespace; no attributes other than the namespace declaration;
  * the root holds exactly one ``requestId`` (a UUID) plus members of the
    operation's output shape; operations without an output shape may carry
    ``<return>true|false</return>``, which is what EC2 itself sends (e.g.
    CreateTags, DeleteVpc) although the model does not declare it;
  * structures: every child element is a member of the shape (by its
    ``locationName``, else its member name), at most once;
  * lists: every child is the list's item element: ``item`` for the EC2 model
    (EC2 always writes ``item``; the three output lists whose model member names
    something else also accept that name); for other models (protocol test
    shapes) the member's ``locationName``, default ``member``; flattened lists
    repeat in the parent;
  * maps: ``entry`` children with ``key``/``value`` (or their locationNames);
  * scalars have no child elements;
  * boolean: exactly ``true`` or ``false``;
  * integer/long: ``-?[0-9]+`` within 32/64-bit range;
  * float/double: a decimal number (or NaN/Infinity/-Infinity);
  * timestamp: ISO 8601 UTC in EC2's form ``2026-11-26T10:00:00.000Z``
    (``timestamp_style='iso'`` relaxes this to any ISO 8601 date-time); a
    shape whose ``timestampFormat`` is ``unixTimestamp`` or ``rfc822`` (only in
    protocol-test shapes) must use that form instead;
  * blob: valid base64;
  * string with an enum: one of the enum values (ENUM_EXCEPTIONS lists the
    documented values EC2 sends outside the model's enum);
  * Content-Type mentions xml (EC2 sends ``text/xml;charset=UTF-8``).

Rules for an error response (HTTP >= 400):
  ``<Response><Errors><Error><Code/><Message/></Error>...</Errors><RequestID/></Response>``
  with no namespace, nothing else, a non-empty Code and a UUID RequestID.  A
  success body with an error status, or an error body with status 200, is a
  problem.

Query-protocol models (IAM, ``protocol: query``) are checked by the same rules
with their own envelope:
  * success: root ``{Operation}Response`` in the model's ``xmlNamespace``, holding
    exactly one ``{resultWrapper}`` element with the output shape's members (when
    the operation has an output) and exactly one
    ``ResponseMetadata/RequestId`` (a UUID), nothing else; list items are
    ``member`` unless the model names them; timestamps may be any ISO 8601;
  * error: ``<ErrorResponse xmlns=…><Error><Type>Sender|Receiver</Type><Code/>
    <Message/></Error><RequestId/></ErrorResponse>``, nothing else, a non-empty
    Code and a UUID RequestId.

Use:
    v = Validator()
    problems = v.validate("DescribeVpcs", status, body_bytes, headers)

    install(boto3_client_or_botocore_session)   # checks every EC2 response
    RECORDER.problems                           # everything seen so far

``install`` registers a handler on ``before-parse.ec2.*`` and ``before-parse.iam.*``;
by default it raises
``StrictViolation`` (an AssertionError) so the calling test fails at the call.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"

_INT_RE = re.compile(r"^-?[0-9]+$")
_FLOAT_RE = re.compile(r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")
_EC2_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_ISO_TS_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$"
)
_RFC822_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT$"
)
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# Values real EC2 sends that the model's enum omits, each documented in the EC2 API
# reference: InternetGatewayAttachment.state is "available" when attached ("For an
# internet gateway, the state is available when attached to a VPC").
ENUM_EXCEPTIONS = {("AttachmentStatus", "available")}

_INT_RANGE = {
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}


class StrictViolation(AssertionError):
    """Raised by the botocore hook when a response breaks a strict rule."""


def _split(tag):
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


@dataclass
class Validator:
    service_model: object = None
    namespace: str | None = EC2_NS
    timestamp_style: str = "ec2"  # 'ec2' => ....000Z ; 'iso' => any ISO 8601
    allow_return_without_output: bool = True
    require_uuid_request_id: bool = True
    check_content_type: bool = True
    ec2_item_lists: bool | None = None  # None: True when the model is EC2's

    def __post_init__(self):
        if self.service_model is None:
            import botocore.session

            self.service_model = botocore.session.get_session().get_service_model("ec2")
        self.query = self.service_model.metadata.get("protocol") == "query"
        if self.query:
            # The dataclass defaults describe EC2; a query model brings its own namespace,
            # and its services print timestamps without EC2's fixed milliseconds.
            if self.namespace == EC2_NS:
                self.namespace = self.service_model.metadata.get("xmlNamespace")
            if self.timestamp_style == "ec2":
                self.timestamp_style = "iso"
        if self.ec2_item_lists is None:
            self.ec2_item_lists = (
                self.service_model.metadata.get("protocol") == "ec2"
                and self.service_model.metadata.get("apiVersion") == "2016-11-15"
            )

    # ------------------------------------------------------------------ API
    def validate(self, operation, status, body, headers=None):
        """Validate one HTTP response. Returns a list of problem strings."""
        op = (
            self.service_model.operation_model(operation)
            if isinstance(operation, str)
            else operation
        )
        problems = []
        if isinstance(body, str):
            body = body.encode("utf-8")
        if headers is not None and self.check_content_type:
            ct = None
            for k, v in dict(headers).items():
                if k.lower() == "content-type":
                    ct = v
            if ct is None or "xml" not in ct.lower():
                problems.append(f"Content-Type is {ct!r}, expected text/xml")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            return problems + [f"body is not well-formed XML: {e}: {body[:200]!r}"]
        _, local = _split(root.tag)
        if self.query:
            if status is not None and status >= 300:
                if local != "ErrorResponse":
                    problems.append(
                        f"HTTP {status} but root is {root.tag!r}, expected error envelope <ErrorResponse>"
                    )
                    return problems
                return problems + self.validate_query_error_envelope(root)
            if local == "ErrorResponse":
                problems.append(f"HTTP {status} but body is an error envelope")
                return problems + self.validate_query_error_envelope(root)
            return problems + self.validate_query_success(op, root)
        if status is not None and status >= 300:
            if local != "Response":
                problems.append(
                    f"HTTP {status} but root is {root.tag!r}, expected error envelope <Response>"
                )
                return problems
            return problems + self.validate_error_envelope(root)
        if local == "Response" and _split(root.tag)[0] is None:
            problems.append(f"HTTP {status} but body is an error envelope")
            return problems + self.validate_error_envelope(root)
        return problems + self.validate_success(op, root)

    def validate_error_envelope(self, root):
        if isinstance(root, (bytes, str)):
            root = ET.fromstring(root)
        p = []
        if root.tag != "Response":
            p.append(f"error root is {root.tag!r}, expected 'Response' without namespace")
        self._no_attrs(root, "/Response", p)
        counts = {}
        for ch in root:
            counts[ch.tag] = counts.get(ch.tag, 0) + 1
            if ch.tag not in ("Errors", "RequestID"):
                p.append(f"/Response: unexpected element {ch.tag!r}")
        for need in ("Errors", "RequestID"):
            if counts.get(need, 0) != 1:
                p.append(f"/Response: expected exactly one {need}, found {counts.get(need, 0)}")
        rid = root.find("RequestID")
        if rid is not None:
            self._check_request_id(rid, "/Response/RequestID", p)
        errs = root.find("Errors")
        if errs is not None:
            self._no_attrs(errs, "/Response/Errors", p)
            if (errs.text or "").strip():
                p.append("/Response/Errors: unexpected text")
            items = list(errs)
            if not items:
                p.append("/Response/Errors: no Error element")
            for i, e in enumerate(items):
                path = f"/Response/Errors/Error[{i}]"
                if e.tag != "Error":
                    p.append(f"/Response/Errors: unexpected element {e.tag!r}")
                    continue
                self._no_attrs(e, path, p)
                c = {}
                for f in e:
                    c[f.tag] = c.get(f.tag, 0) + 1
                    if f.tag not in ("Code", "Message"):
                        p.append(f"{path}: unexpected element {f.tag!r}")
                    elif len(f):
                        p.append(f"{path}/{f.tag}: has child elements")
                for need in ("Code", "Message"):
                    if c.get(need, 0) != 1:
                        p.append(f"{path}: expected exactly one {need}, found {c.get(need, 0)}")
                code = e.find("Code")
                if code is not None and not (code.text or "").strip():
                    p.append(f"{path}/Code: empty")
        return p

    def validate_query_error_envelope(self, root):
        if isinstance(root, (bytes, str)):
            root = ET.fromstring(root)
        p = []
        ns, local = _split(root.tag)
        if local != "ErrorResponse":
            p.append(f"error root is {local!r}, expected 'ErrorResponse'")
        if ns not in (None, self.namespace):
            p.append(f"error namespace is {ns!r}, expected {self.namespace!r}")
        self._ns = ns
        self._no_attrs(root, "/ErrorResponse", p)
        self._no_text(root, "/ErrorResponse", p)
        counts = {}
        for ch in root:
            self._check_ns(ch, f"/ErrorResponse/{_split(ch.tag)[1]}", p)
            name = _split(ch.tag)[1]
            counts[name] = counts.get(name, 0) + 1
            if name not in ("Error", "RequestId"):
                p.append(f"/ErrorResponse: unexpected element {name!r}")
        for need in ("Error", "RequestId"):
            if counts.get(need, 0) != 1:
                p.append(f"/ErrorResponse: expected exactly one {need}, found {counts.get(need, 0)}")
        for ch in root:
            name = _split(ch.tag)[1]
            if name == "RequestId":
                self._check_request_id(ch, "/ErrorResponse/RequestId", p)
            elif name == "Error":
                self._no_attrs(ch, "/ErrorResponse/Error", p)
                self._no_text(ch, "/ErrorResponse/Error", p)
                c = {}
                for f in ch:
                    fname = _split(f.tag)[1]
                    self._check_ns(f, f"/ErrorResponse/Error/{fname}", p)
                    c[fname] = c.get(fname, 0) + 1
                    if fname not in ("Type", "Code", "Message"):
                        p.append(f"/ErrorResponse/Error: unexpected element {fname!r}")
                    elif len(f):
                        p.append(f"/ErrorResponse/Error/{fname}: has child elements")
                    elif fname == "Type" and (f.text or "") not in ("Sender", "Receiver"):
                        p.append(f"/ErrorResponse/Error/Type: {f.text!r} is not Sender or Receiver")
                    elif fname == "Code" and not (f.text or "").strip():
                        p.append("/ErrorResponse/Error/Code: empty")
                for need in ("Type", "Code", "Message"):
                    if c.get(need, 0) != 1:
                        p.append(f"/ErrorResponse/Error: expected exactly one {need}, found {c.get(need, 0)}")
        return p

    def validate_query_success(self, op, root):
        if isinstance(root, (bytes, str)):
            root = ET.fromstring(root)
        p = []
        ns, local = _split(root.tag)
        want = f"{op.name}Response"
        if local != want:
            p.append(f"root element is {local!r}, expected {want!r}")
        if ns != self.namespace:
            p.append(f"root namespace is {ns!r}, expected {self.namespace!r}")
        self._no_attrs(root, "/" + local, p)
        self._no_text(root, "/" + local, p)
        self._ns = ns
        shape = op.output_shape
        # botocore carries the output reference's resultWrapper in the shape's serialization.
        wrapper = shape.serialization.get("resultWrapper") if shape is not None else None
        if shape is not None and wrapper is None:
            p.append(f"model gives operation {op.name} an output without a resultWrapper")
            return p
        counts = {}
        for c in root:
            name = _split(c.tag)[1]
            counts[name] = counts.get(name, 0) + 1
            cpath = f"/{local}/{name}"
            self._check_ns(c, cpath, p)
            if name == "ResponseMetadata":
                self._no_attrs(c, cpath, p)
                self._no_text(c, cpath, p)
                kids = [_split(k.tag)[1] for k in c]
                if kids != ["RequestId"]:
                    p.append(f"{cpath}: expected exactly one RequestId, found {kids}")
                for k in c:
                    self._check_ns(k, f"{cpath}/{_split(k.tag)[1]}", p)
                    if _split(k.tag)[1] == "RequestId":
                        self._check_request_id(k, f"{cpath}/RequestId", p)
            elif wrapper is not None and name == wrapper:
                self._no_attrs(c, cpath, p)
                self._structure(shape, c, cpath, p)
            else:
                p.append(f"/{local}: unexpected element {name!r}")
        if counts.get("ResponseMetadata", 0) != 1:
            p.append(f"/{local}: expected exactly one ResponseMetadata, found {counts.get('ResponseMetadata', 0)}")
        if wrapper is not None and counts.get(wrapper, 0) != 1:
            p.append(f"/{local}: expected exactly one {wrapper}, found {counts.get(wrapper, 0)}")
        return p

    def validate_success(self, op, root):
        if isinstance(root, (bytes, str)):
            root = ET.fromstring(root)
        p = []
        ns, local = _split(root.tag)
        want = f"{op.name}Response"
        if local != want:
            p.append(f"root element is {local!r}, expected {want!r}")
        if self.namespace is not None and ns != self.namespace:
            p.append(f"root namespace is {ns!r}, expected {self.namespace!r}")
        self._no_attrs(root, "/" + local, p)
        self._ns = ns
        shape = op.output_shape
        rid = [c for c in root if _split(c.tag)[1] == "requestId"]
        if len(rid) != 1:
            p.append(f"/{local}: expected exactly one requestId, found {len(rid)}")
        else:
            self._check_ns(rid[0], f"/{local}/requestId", p)
            self._check_request_id(rid[0], f"/{local}/requestId", p)
        rest = [c for c in root if _split(c.tag)[1] != "requestId"]
        if shape is None:
            returns = 0
            for c in rest:
                name = _split(c.tag)[1]
                if name == "return" and self.allow_return_without_output and returns == 0:
                    returns += 1
                    self._check_ns(c, f"/{local}/return", p)
                    self._scalar("boolean", c.text or "", f"/{local}/return", p, c, None)
                else:
                    p.append(
                        f"/{local}: element {name!r} not defined (operation has no output shape)"
                    )
            self._no_text(root, "/" + local, p)
            return p
        self._structure(shape, root, "/" + local, p, skip={"requestId"})
        return p

    # ------------------------------------------------------------ internals
    def _check_request_id(self, el, path, p):
        v = (el.text or "").strip()
        if not v:
            p.append(f"{path}: empty")
        elif self.require_uuid_request_id and not _UUID_RE.match(v):
            p.append(f"{path}: {v!r} is not a UUID")
        if len(el):
            p.append(f"{path}: has child elements")

    def _no_attrs(self, el, path, p):
        if el.attrib:
            p.append(f"{path}: unexpected attributes {dict(el.attrib)!r}")

    def _no_text(self, el, path, p):
        if (el.text or "").strip():
            p.append(f"{path}: unexpected text {el.text.strip()[:40]!r} in a structure/list")
        for c in el:
            if (c.tail or "").strip():
                p.append(f"{path}: unexpected text {c.tail.strip()[:40]!r} between elements")

    def _check_ns(self, el, path, p):
        ns, _ = _split(el.tag)
        if ns != self._ns:
            p.append(f"{path}: namespace {ns!r} differs from the root's {self._ns!r}")

    @staticmethod
    def _member_xml_name(member_name, mshape):
        if mshape.type_name == "list" and mshape.serialization.get("flattened"):
            n = mshape.member.serialization.get("name")
            if n:
                return n
        return mshape.serialization.get("name") or member_name

    def _list_item_names(self, shape):
        declared = shape.member.serialization.get("name")
        if self.ec2_item_lists:
            return {"item", declared} - {None}
        return {declared or "member"}

    def _parse(self, shape, el, path, p):
        self._check_ns(el, path, p)
        self._no_attrs(el, path, p)
        t = shape.type_name
        if t == "structure":
            self._structure(shape, el, path, p)
        elif t == "list":
            self._list(shape, el, path, p)
        elif t == "map":
            self._map(shape, el, path, p)
        else:
            if len(el):
                p.append(f"{path}: scalar {t} ({shape.name}) has child elements")
                return
            self._scalar(t, el.text or "", path, p, el, shape)

    def _structure(self, shape, el, path, p, skip=()):
        self._no_text(el, path, p)
        by_xml = {}
        for mname, mshape in shape.members.items():
            by_xml[self._member_xml_name(mname, mshape)] = (mname, mshape)
        seen = {}
        for c in el:
            _, local = _split(c.tag)
            if local in skip:
                continue
            cpath = f"{path}/{local}"
            if local not in by_xml:
                p.append(f"{cpath}: element not defined by shape {shape.name}")
                continue
            seen[local] = seen.get(local, 0) + 1
            mname, mshape = by_xml[local]
            flattened = mshape.serialization.get("flattened")
            if flattened and mshape.type_name == "list":
                self._parse(mshape.member, c, f"{cpath}[{seen[local]-1}]", p)
                continue
            if flattened and mshape.type_name == "map":
                self._check_ns(c, cpath, p)
                self._map_entry(mshape, c, f"{cpath}[{seen[local]-1}]", p)
                continue
            if seen[local] == 2:
                p.append(f"{cpath}: element repeated (member {mname} is not a flattened list)")
            self._parse(mshape, c, cpath, p)

    def _list(self, shape, el, path, p):
        self._no_text(el, path, p)
        names = self._list_item_names(shape)
        for i, c in enumerate(el):
            _, local = _split(c.tag)
            cpath = f"{path}/{local}[{i}]"
            if local not in names:
                p.append(
                    f"{cpath}: list {shape.name} child must be <{sorted(names)[0]}>, got <{local}>"
                    " (missing item wrapper?)"
                )
                continue
            self._parse(shape.member, c, cpath, p)

    def _map(self, shape, el, path, p):
        self._no_text(el, path, p)
        for i, c in enumerate(el):
            _, local = _split(c.tag)
            cpath = f"{path}/{local}[{i}]"
            if local != "entry":
                p.append(f"{cpath}: map child must be <entry>")
                continue
            self._check_ns(c, cpath, p)
            self._map_entry(shape, c, cpath, p)

    def _map_entry(self, shape, c, cpath, p):
        kname = shape.key.serialization.get("name", "key")
        vname = shape.value.serialization.get("name", "value")
        self._no_text(c, cpath, p)
        got = {}
        for kv in c:
            _, kl = _split(kv.tag)
            got[kl] = got.get(kl, 0) + 1
            if kl == kname:
                self._parse(shape.key, kv, f"{cpath}/{kl}", p)
            elif kl == vname:
                self._parse(shape.value, kv, f"{cpath}/{kl}", p)
            else:
                p.append(f"{cpath}/{kl}: unexpected element in map entry")
        for need in (kname, vname):
            if got.get(need, 0) != 1:
                p.append(f"{cpath}: expected exactly one <{need}> in map entry")

    def _scalar(self, t, text, path, p, el, shape):
        v = text
        if t == "boolean":
            if v not in ("true", "false"):
                p.append(f"{path}: boolean {v!r} is not exactly 'true' or 'false'")
        elif t in ("integer", "long"):
            if not _INT_RE.match(v):
                p.append(f"{path}: {t} {v!r} does not parse")
            else:
                lo, hi = _INT_RANGE[t]
                if not lo <= int(v) <= hi:
                    p.append(f"{path}: {t} {v!r} out of range")
        elif t in ("float", "double"):
            if not (_FLOAT_RE.match(v) or v in ("NaN", "Infinity", "-Infinity")):
                p.append(f"{path}: {t} {v!r} does not parse")
        elif t == "timestamp":
            fmt = shape.serialization.get("timestampFormat") if shape is not None else None
            if fmt == "unixTimestamp":
                if not _FLOAT_RE.match(v):
                    p.append(f"{path}: timestamp {v!r} is not epoch seconds (unixTimestamp)")
                return
            if fmt == "rfc822":
                if not _RFC822_RE.match(v):
                    p.append(f"{path}: timestamp {v!r} is not an RFC 822 HTTP date")
                return
            rx = _EC2_TS_RE if self.timestamp_style == "ec2" else _ISO_TS_RE
            if not rx.match(v):
                want = "YYYY-MM-DDTHH:MM:SS.mmmZ" if self.timestamp_style == "ec2" else "ISO 8601"
                p.append(f"{path}: timestamp {v!r} is not {want}")
            else:
                try:
                    _dt.datetime.fromisoformat(v.replace("Z", "+00:00")[:19])
                except ValueError:
                    p.append(f"{path}: timestamp {v!r} is not a valid date")
        elif t == "blob":
            try:
                base64.b64decode(v.strip(), validate=True)
            except (binascii.Error, ValueError):
                p.append(f"{path}: blob is not valid base64")
        elif t in ("string", "character"):
            enum = getattr(shape, "enum", None) if shape is not None else None
            if enum and v not in enum and (shape.name, v) not in ENUM_EXCEPTIONS:
                p.append(f"{path}: {v!r} is not in enum {shape.name} {list(enum)[:8]}...")
        else:
            p.append(f"{path}: unknown shape type {t}")


# --------------------------------------------------------------------- hooks
@dataclass
class Recorder:
    problems: list = field(default_factory=list)  # (operation, status, problem, body)
    checked: int = 0
    operations: dict = field(default_factory=dict)  # operation name -> responses checked
    raise_on_problem: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self):
        with self._lock:
            self.problems.clear()
            self.checked = 0


RECORDER = Recorder()
_VALIDATORS = {}


def _validator_for(service_model):
    key = id(service_model)
    v = _VALIDATORS.get(key)
    if v is None:
        v = _VALIDATORS[key] = Validator(service_model=service_model)
    return v


def make_handler(recorder=None):
    rec = recorder or RECORDER

    def _before_parse(operation_model, response_dict, **kwargs):
        v = _validator_for(operation_model.service_model)
        body = response_dict.get("body") or b""
        probs = v.validate(
            operation_model, response_dict.get("status_code"), body, response_dict.get("headers")
        )
        with rec._lock:
            rec.checked += 1
            rec.operations[operation_model.name] = rec.operations.get(operation_model.name, 0) + 1
            for pr in probs:
                rec.problems.append((operation_model.name, response_dict.get("status_code"), pr, body))
        if probs and rec.raise_on_problem:
            raise StrictViolation(
                f"{operation_model.name} (HTTP {response_dict.get('status_code')}): strict-model problems:\n  "
                + "\n  ".join(probs)
                + f"\nbody: {body[:2000]!r}"
            )

    return _before_parse


def install(target, recorder=None):
    """Register the strict check on a boto3 client, botocore client or session."""
    handler = make_handler(recorder)
    events = None
    if hasattr(target, "meta") and hasattr(target.meta, "events"):
        events = target.meta.events  # a client
    elif hasattr(target, "register"):
        events = target  # botocore session or event emitter
    elif hasattr(target, "_session"):  # boto3.Session
        events = target._session
    if events is None:
        raise TypeError(f"cannot install the strict hook on {target!r}")
    events.register("before-parse.ec2.*", handler, unique_id="ec2d-strict-check")
    events.register("before-parse.iam.*", handler, unique_id="ec2d-strict-check-iam")
    return handler
