//! ec2d in-process on a random port, driven by requests signed with aws-sigv4.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use ec2d::api::Api;
use ec2d::auth::Keyring;
use ec2d::compute::{Compute, EngineChoice};
use ec2d::http::{Server, serve};
use ec2d::storage::Storage;
use ec2d::store::Store;

struct Running {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("db.sqlite")).expect("store"));
    let compute = Arc::new(Compute::new(EngineChoice::None, dir.path()));
    let storage = Arc::new(Storage::new(dir.path()).expect("storage"));
    let mut keys = Keyring::with_defaults();
    keys.add("other", "othersecret", "111111111111");
    let server = Arc::new(Server {
        api: Api::new(store, compute, storage),
        keys,
        started: Instant::now(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(serve(server, listener, std::future::pending()));
    Running {
        addr,
        _dir: dir,
        _rt: rt,
    }
}

/// Signs a POST of `body` as botocore does, then lets `tamper` change it before sending.
fn request(
    addr: SocketAddr,
    body: &str,
    key: &str,
    secret: &str,
    when: SystemTime,
    tamper: impl FnOnce(&mut String, &mut Vec<(String, String)>),
) -> (u16, String) {
    let host = addr.to_string();
    let mut headers = vec![
        ("host".to_string(), host.clone()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let identity: Identity = Credentials::new(key, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ec2")
        .time(when)
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    let mut body = body.to_string();
    tamper(&mut body, &mut headers);
    send(addr, &body, &headers)
}

fn send(addr: SocketAddr, body: &str, headers: &[(String, String)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn ok(addr: SocketAddr, body: &str) -> (u16, String) {
    request(addr, body, "test", "test", SystemTime::now(), |_, _| {})
}

fn code(resp: &str) -> &str {
    resp.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
}

const DESCRIBE: &str = "Action=DescribeVpcs&Version=2016-11-15";

#[test]
fn signed_request_sees_the_default_vpc() {
    let s = start();
    let (status, body) = ok(s.addr, DESCRIBE);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<cidrBlock>172.31.0.0/16</cidrBlock>"),
        "{body}"
    );
    assert!(body.contains("<isDefault>true</isDefault>"), "{body}");
    assert!(body.contains("xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\""));
}

#[test]
fn sigv4_negative_cases() {
    let s = start();
    let now = SystemTime::now();
    let cases: Vec<(&str, (u16, String))> = vec![
        (
            "AuthFailure",
            request(s.addr, DESCRIBE, "test", "wrong", now, |_, _| {}),
        ),
        (
            "AuthFailure",
            request(s.addr, DESCRIBE, "nobody", "test", now, |_, _| {}),
        ),
        (
            "RequestExpired",
            request(
                s.addr,
                DESCRIBE,
                "test",
                "test",
                now - Duration::from_secs(20 * 60),
                |_, _| {},
            ),
        ),
        (
            "AuthFailure",
            request(s.addr, DESCRIBE, "test", "test", now, |b, _| {
                *b = b.replace("DescribeVpcs", "DescribeRegions")
            }),
        ),
        (
            "AuthFailure",
            request(s.addr, DESCRIBE, "test", "test", now, |_, h| {
                for (k, v) in h.iter_mut() {
                    if k == "content-type" {
                        *v = "application/x-www-form-urlencoded".into();
                    }
                }
            }),
        ),
        (
            "MissingAuthenticationToken",
            send(s.addr, DESCRIBE, &[("host".into(), s.addr.to_string())]),
        ),
        (
            "IncompleteSignature",
            request(s.addr, DESCRIBE, "test", "test", now, |_, h| {
                for (k, v) in h.iter_mut() {
                    if k == "authorization" {
                        *v = "AWS4-HMAC-SHA256 Credential=test/20261127/us-east-1/ec2/aws4_request"
                            .into();
                    }
                }
            }),
        ),
    ];
    for (want, (status, body)) in cases {
        assert_eq!(code(&body), want, "HTTP {status}: {body}");
        assert!(status >= 400, "{body}");
    }
}

#[test]
fn accounts_and_regions_are_isolated() {
    let s = start();
    let (_, body) = ok(
        s.addr,
        "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.7.0.0/16",
    );
    let vpc = body
        .split("<vpcId>")
        .nth(1)
        .and_then(|r| r.split("</vpcId>").next())
        .expect("vpc id")
        .to_string();
    let (status, body) = request(
        s.addr,
        &format!("{DESCRIBE}&VpcId.1={vpc}"),
        "other",
        "othersecret",
        SystemTime::now(),
        |_, _| {},
    );
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidVpcID.NotFound"),
        "{body}"
    );
}

#[test]
fn protocol_errors() {
    let s = start();
    let cases = [
        (
            "Action=DescribeUnicorns&Version=2016-11-15",
            "InvalidAction",
        ),
        (
            "Action=AllocateHosts&Version=2016-11-15",
            "UnsupportedOperation",
        ),
        (
            "Action=DescribeVpcs&Version=2016-11-15&Bogus=1",
            "UnknownParameter",
        ),
        ("Action=DeleteVpc&Version=2016-11-15", "MissingParameter"),
        (
            "Action=DescribeVpcs&Version=2016-11-15&MaxResults=x",
            "InvalidParameterValue",
        ),
        (
            "Action=DescribeVpcs&Version=2016-11-15&MaxResults=1",
            "InvalidParameterValue",
        ),
        (
            "Action=DescribeVpcs&Version=2016-11-15&DryRun=true",
            "DryRunOperation",
        ),
        (
            "Action=RunInstances&Version=2016-11-15&MinCount=1&MaxCount=1&ImageId=ami-12345678",
            "InsufficientInstanceCapacity",
        ),
    ];
    for (body, want) in cases {
        let (status, resp) = ok(s.addr, body);
        assert_eq!(code(&resp), want, "{body}: HTTP {status} {resp}");
        assert!(resp.contains("<RequestID>"), "{resp}");
    }
    let (_, resp) = ok(s.addr, "Action=AllocateHosts&Version=2016-11-15");
    assert!(
        resp.contains("AllocateHosts"),
        "the error names the action: {resp}"
    );
}

#[test]
fn client_token_is_idempotent() {
    let s = start();
    let create = "Action=CreateRouteTable&Version=2016-11-15&ClientToken=tok-1&VpcId=";
    let (_, vpcs) = ok(s.addr, DESCRIBE);
    let vpc = vpcs
        .split("<vpcId>")
        .nth(1)
        .and_then(|r| r.split("</vpcId>").next())
        .expect("vpc");
    let (_, a) = ok(s.addr, &format!("{create}{vpc}"));
    let (_, b) = ok(s.addr, &format!("{create}{vpc}"));
    let rtb = |x: &str| {
        x.split("<routeTableId>")
            .nth(1)
            .map(|r| r[..21].to_string())
    };
    assert_eq!(rtb(&a), rtb(&b), "{a}\n{b}");
    let (_, c) = ok(
        s.addr,
        &format!(
            "{create}{vpc}&TagSpecification.1.ResourceType=route-table&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v"
        ),
    );
    assert_eq!(code(&c), "IdempotentParameterMismatch", "{c}");
}
