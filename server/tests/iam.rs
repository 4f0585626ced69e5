//! Instance role credentials end to end, without a guest: IAM and EC2 calls set up a role,
//! a profile and an association; `instance_role_credentials` issues the credentials IMDS
//! would serve; requests signed with them (and their session token) are accepted as the
//! instance's account, across a restart, until the association ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use ec2d::api::Api;
use ec2d::api::iam_instance_profiles::instance_role_credentials;
use ec2d::api::instances::{self, InstanceRecord};
use ec2d::auth::Keyring;
use ec2d::compute::{Compute, EngineChoice};
use ec2d::http::{Server, serve};
use ec2d::storage::Storage;
use ec2d::store::Store;

const ACCOUNT: &str = "000000000000";
const INSTANCE: &str = "i-0123456789abcdef0";

struct Running {
    addr: SocketAddr,
    store: Arc<Store>,
    rt: tokio::runtime::Runtime,
}

fn start(dir: &Path) -> Running {
    let store = Arc::new(Store::open(&dir.join("db.sqlite")).expect("store"));
    let compute = Arc::new(Compute::new(EngineChoice::None, dir));
    let storage = Arc::new(Storage::new(dir).expect("storage"));
    let server = Arc::new(Server {
        api: Api::new(store.clone(), compute, storage),
        keys: Keyring::with_defaults(),
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
    Running { addr, store, rt }
}

/// Stops the server and lets go of the database, so another can open it.
fn stop(r: Running) {
    let Running { store, rt, .. } = r;
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(store);
}

struct Creds<'a> {
    key: &'a str,
    secret: &'a str,
    token: Option<&'a str>,
}

const TEST: Creds<'static> = Creds {
    key: "test",
    secret: "test",
    token: None,
};

fn params<'a>(
    identity: &'a Identity,
    service: &'a str,
    settings: SigningSettings,
) -> aws_sigv4::http_request::SigningParams<'a> {
    v4::SigningParams::builder()
        .identity(identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .expect("params")
        .into()
}

/// A POST signed in the Authorization header, with the session token as a header.
fn post(addr: SocketAddr, service: &str, body: &str, creds: &Creds<'_>) -> (u16, String) {
    let host = addr.to_string();
    let mut headers = vec![
        ("host".to_string(), host.clone()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let identity: Identity = Credentials::new(
        creds.key,
        creds.secret,
        creds.token.map(str::to_string),
        None,
        "test",
    )
    .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable");
    let (instructions, _) = sign(
        signable,
        &params(&identity, service, SigningSettings::default()),
    )
    .expect("sign")
    .into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    send(addr, "POST", "/", body, &headers)
}

/// A presigned GET: signature and session token in the query string.
fn presigned_get(addr: SocketAddr, query: &str, creds: &Creds<'_>) -> (u16, String) {
    let host = addr.to_string();
    let identity: Identity = Credentials::new(
        creds.key,
        creds.secret,
        creds.token.map(str::to_string),
        None,
        "test",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(300));
    let signable = SignableRequest::new(
        "GET",
        format!("http://{host}/?{query}"),
        [("host", host.as_str())].into_iter(),
        SignableBody::Bytes(b""),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params(&identity, "ec2", settings))
        .expect("sign")
        .into_parts();
    let mut path = format!("/?{query}");
    for (k, v) in instructions.params() {
        let k: String = form_urlencoded::byte_serialize(k.as_bytes()).collect();
        let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
        path.push_str(&format!("&{k}={v}"));
    }
    send(addr, "GET", &path, "", &[("host".to_string(), host)])
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(String, String)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
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

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    text.split(open)
        .nth(1)
        .and_then(|r| r.split(close).next())
        .unwrap_or("")
}

fn iam(addr: SocketAddr, action: &str, args: &str) -> String {
    let (status, body) = post(
        addr,
        "iam",
        &format!("Action={action}&Version=2010-05-08{args}"),
        &TEST,
    );
    assert_eq!(status, 200, "{action}: {body}");
    body
}

/// An instance record, as RunInstances would leave it; written directly because this test
/// runs without an engine to launch machines.
fn seed_instance(store: &Store) {
    // From JSON, so fields other families add (with serde defaults) need no change here.
    let rec: InstanceRecord = serde_json::from_value(serde_json::json!({
        "instance": {"InstanceId": INSTANCE, "State": {"Code": 16, "Name": "running"}},
        "reservation_id": "r-0123456789abcdef0",
        "user_data": null,
        "shutdown_behavior": "stop",
        "disable_api_termination": false,
        "disable_api_stop": false,
        "smbios_uuid": "ec201234-5678-9abc-def0-000000000000",
        "vcpus": 1,
        "memory_mib": 512,
        "terminated_at": null,
    }))
    .expect("instance record");
    store
        .transaction(ACCOUNT, "us-east-1", |tx| {
            tx.insert(instances::KIND, INSTANCE, &rec)
        })
        .expect("seed instance");
}

const DESCRIBE: &str = "Action=DescribeInstances&Version=2016-11-15";

#[test]
fn instance_role_credentials_sign_requests_until_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path());
    let trust = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
    iam(
        s.addr,
        "CreateRole",
        &format!("&RoleName=app&AssumeRolePolicyDocument={trust}"),
    );
    let profile = iam(
        s.addr,
        "CreateInstanceProfile",
        "&InstanceProfileName=app-profile",
    );
    let profile_arn = between(&profile, "<Arn>", "</Arn>").to_string();
    let profile_id = between(&profile, "<InstanceProfileId>", "</InstanceProfileId>").to_string();
    iam(
        s.addr,
        "AddRoleToInstanceProfile",
        "&InstanceProfileName=app-profile&RoleName=app",
    );
    seed_instance(&s.store);

    // No association yet: nothing to serve.
    assert_eq!(
        instance_role_credentials(&s.store, ACCOUNT, "us-east-1", INSTANCE).unwrap(),
        None
    );
    let (status, body) = post(
        s.addr,
        "ec2",
        &format!(
            "Action=AssociateIamInstanceProfile&Version=2016-11-15&InstanceId={INSTANCE}\
             &IamInstanceProfile.Name=app-profile"
        ),
        &TEST,
    );
    assert_eq!(status, 200, "{body}");
    let association = between(&body, "<associationId>", "</associationId>").to_string();
    assert!(association.starts_with("iip-assoc-"), "{body}");

    let view = instance_role_credentials(&s.store, ACCOUNT, "us-east-1", INSTANCE)
        .unwrap()
        .expect("credentials once associated");
    assert_eq!(view.role_name, "app");
    assert_eq!(view.profile_arn, profile_arn);
    assert_eq!(view.profile_id, profile_id);
    let c = view.credentials.clone();
    assert!(c.access_key_id.starts_with("ASIA") && c.access_key_id.len() == 20);
    assert_eq!(c.secret_access_key.len(), 40);
    assert_eq!((c.expiration - c.last_updated).num_hours(), 6);
    let session = Creds {
        key: &c.access_key_id,
        secret: &c.secret_access_key,
        token: Some(&c.token),
    };

    // Signed with the session credentials, acting as the instance's account: on EC2 (header
    // and presigned URL) and on IAM.
    let (status, body) = post(s.addr, "ec2", DESCRIBE, &session);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(INSTANCE), "{body}");
    let (status, body) = presigned_get(s.addr, DESCRIBE, &session);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(INSTANCE), "{body}");
    let (status, body) = post(
        s.addr,
        "iam",
        "Action=GetRole&Version=2010-05-08&RoleName=app",
        &session,
    );
    assert_eq!(status, 200, "{body}");

    // Without the token, with another token, or with another secret: refused.
    for (creds, what) in [
        (
            Creds {
                token: None,
                ..session
            },
            "no token",
        ),
        (
            Creds {
                token: Some("forged"),
                ..session
            },
            "another token",
        ),
        (
            Creds {
                secret: "0000000000000000000000000000000000000000",
                ..session
            },
            "another secret",
        ),
    ] {
        let (status, body) = post(s.addr, "ec2", DESCRIBE, &creds);
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(between(&body, "<Code>", "</Code>"), "AuthFailure", "{what}");
        let (status, body) = post(s.addr, "iam", "Action=ListRoles&Version=2010-05-08", &creds);
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains("<ErrorResponse"), "{what}: {body}");
    }

    // Issued credentials are stored: after a restart the same set is served and accepted.
    stop(s);
    let s = start(dir.path());
    let again = instance_role_credentials(&s.store, ACCOUNT, "us-east-1", INSTANCE)
        .unwrap()
        .expect("credentials after restart");
    assert_eq!(again, view);
    let (status, body) = post(s.addr, "ec2", DESCRIBE, &session);
    assert_eq!(status, 200, "{body}");

    // Disassociation revokes them at once.
    let (status, body) = post(
        s.addr,
        "ec2",
        &format!(
            "Action=DisassociateIamInstanceProfile&Version=2016-11-15&AssociationId={association}"
        ),
        &TEST,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(s.addr, "ec2", DESCRIBE, &session);
    assert_eq!(status, 401, "{body}");
    assert_eq!(between(&body, "<Code>", "</Code>"), "AuthFailure");
    assert_eq!(
        instance_role_credentials(&s.store, ACCOUNT, "us-east-1", INSTANCE).unwrap(),
        None
    );
    stop(s);
}
