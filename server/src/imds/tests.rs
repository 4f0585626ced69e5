use std::time::{Duration, Instant};

use chrono::TimeZone as _;

use super::*;

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().expect("valid timestamp")
}

/// A private-only instance with one key pair and user data: the common case.
fn view(id: &str) -> InstanceView {
    InstanceView {
        instance_id: id.to_string(),
        account_id: "123456789012".to_string(),
        region: "us-east-1".to_string(),
        availability_zone: "us-east-1a".to_string(),
        availability_zone_id: "use1-az1".to_string(),
        ami_id: "ami-0123456789abcdef0".to_string(),
        ami_launch_index: 0,
        instance_type: "t3.micro".to_string(),
        architecture: "x86_64".to_string(),
        private_ip: "10.0.1.5".to_string(),
        private_dns: "ip-10-0-1-5.ec2.internal".to_string(),
        public_ip: None,
        public_dns: None,
        mac: "0e:12:34:56:78:9a".to_string(),
        interface_id: "eni-0aaaaaaaaaaaaaaaa".to_string(),
        subnet_id: "subnet-0bbbbbbbbbbbbbbbb".to_string(),
        subnet_cidr: "10.0.1.0/24".to_string(),
        vpc_id: "vpc-0cccccccccccccccc".to_string(),
        vpc_cidrs: vec!["10.0.0.0/16".to_string(), "10.1.0.0/16".to_string()],
        security_groups: vec![
            ("sg-01".to_string(), "default".to_string()),
            ("sg-02".to_string(), "web".to_string()),
        ],
        reservation_id: "r-0ddddddddddddddddd".to_string(),
        block_devices: vec![
            ("root".to_string(), "/dev/xvda".to_string()),
            ("ami".to_string(), "/dev/xvda".to_string()),
            ("ebs1".to_string(), "sdf".to_string()),
        ],
        public_keys: vec![(
            "my-key".to_string(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample my-key".to_string(),
        )],
        user_data: Some(b"#!/bin/sh\necho hi\n\xff\x00".to_vec()),
        tags: vec![
            ("Name".to_string(), "web-1".to_string()),
            ("team:owner".to_string(), "ops".to_string()),
        ],
        pending_time: at(1_479_573_131),
        iam: None,
        identity_credentials: None,
        spot_action: None,
        rebalance_notice: None,
        options: MetadataOptions::default(),
    }
}

fn creds(tag: &str) -> Credentials {
    Credentials {
        access_key_id: format!("ASIA{tag}"),
        secret_access_key: format!("secret-{tag}"),
        token: format!("token-{tag}"),
        expiration: at(1_700_003_600),
        last_updated: at(1_700_000_000),
    }
}

/// Everything optional switched on: public address, profile, identity credentials, spot and
/// rebalance notices, tags in metadata.
fn full_view(id: &str) -> InstanceView {
    let mut v = view(id);
    v.public_ip = Some("127.0.100.7".to_string());
    v.public_dns = Some("ec2-127-0-100-7.compute-1.amazonaws.com".to_string());
    v.iam = Some(IamView {
        profile_arn: "arn:aws:iam::123456789012:instance-profile/app".to_string(),
        profile_id: "AIPAEXAMPLE".to_string(),
        role_name: "app-role".to_string(),
        credentials: creds("ROLE"),
    });
    v.identity_credentials = Some(creds("IDENT"));
    v.spot_action = Some(SpotAction {
        action: SpotActionKind::Stop,
        time: at(1_505_722_920),
    });
    v.rebalance_notice = Some(at(1_604_564_520));
    v.options.instance_metadata_tags = Switch::Enabled;
    v
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.to_string(),
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn get(imds: &Imds, v: &InstanceView, path: &str) -> Response {
    imds.handle(v, &req("GET", path, &[]), Instant::now())
}

fn body(r: &Response) -> String {
    String::from_utf8(r.body.clone()).expect("utf-8 body")
}

/// 200 and its body as text, or a panic naming the path.
fn ok(imds: &Imds, v: &InstanceView, path: &str) -> String {
    let r = get(imds, v, path);
    assert_eq!(r.status, 200, "GET {path}");
    body(&r)
}

fn token(imds: &Imds, v: &InstanceView, ttl: &str, now: Instant) -> String {
    let r = imds.handle(
        v,
        &req("PUT", "/latest/api/token", &[(TTL_HEADER, ttl)]),
        now,
    );
    assert_eq!(r.status, 200);
    body(&r)
}

fn get_with(imds: &Imds, v: &InstanceView, path: &str, tok: &str, now: Instant) -> u16 {
    imds.handle(v, &req("GET", path, &[(TOKEN_HEADER, tok)]), now)
        .status
}

// ---- tokens -------------------------------------------------------------------------------------

#[test]
fn token_put_returns_token_echoes_ttl_and_sets_hop_limit() {
    let imds = Imds::new();
    let mut v = view("i-a");
    v.options.hop_limit = 2;
    let r = imds.handle(
        &v,
        &req("PUT", "/latest/api/token", &[(TTL_HEADER, "21600")]),
        Instant::now(),
    );
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
    assert_eq!(r.header(TTL_HEADER), Some("21600"));
    assert_eq!(r.ip_ttl, Some(2));
    // Only the token answer carries a hop limit.
    assert_eq!(get(&imds, &v, "/latest/meta-data/instance-id").ip_ttl, None);
}

#[test]
fn ttl_header_name_is_case_insensitive() {
    let imds = Imds::new();
    let r = imds.handle(
        &view("i-a"),
        &req(
            "PUT",
            "/latest/api/token",
            &[("x-AWS-ec2-metadata-token-ttl-seconds", "60")],
        ),
        Instant::now(),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn ttl_outside_1_to_21600_or_not_a_number_is_400() {
    let imds = Imds::new();
    let v = view("i-a");
    let now = Instant::now();
    let put = |ttl: Option<&str>| {
        let headers: Vec<(&str, &str)> = ttl.map(|t| (TTL_HEADER, t)).into_iter().collect();
        imds.handle(&v, &req("PUT", "/latest/api/token", &headers), now)
            .status
    };
    assert_eq!(put(None), 400, "missing");
    for bad in [
        "0",
        "21601",
        "-1",
        "abc",
        "",
        "1.5",
        "+5",
        "1e3",
        "99999999999999999999999",
    ] {
        assert_eq!(put(Some(bad)), 400, "ttl {bad:?}");
    }
    for good in ["1", "21600", " 300 "] {
        assert_eq!(put(Some(good)), 200, "ttl {good:?}");
    }
}

#[test]
fn put_with_x_forwarded_for_is_403() {
    let imds = Imds::new();
    let v = view("i-a");
    for name in ["X-Forwarded-For", "x-forwarded-for"] {
        let r = imds.handle(
            &v,
            &req(
                "PUT",
                "/latest/api/token",
                &[(TTL_HEADER, "60"), (name, "10.0.0.9")],
            ),
            Instant::now(),
        );
        assert_eq!(r.status, 403, "{name}");
        assert_eq!(r.ip_ttl, None);
    }
}

#[test]
fn put_to_dated_token_path_is_403_and_other_puts_405() {
    let imds = Imds::new();
    let v = view("i-a");
    let put =
        |path: &str| imds.handle(&v, &req("PUT", path, &[(TTL_HEADER, "60")]), Instant::now());
    for path in [
        "/2021-03-23/api/token",
        "/2009-04-04/api/token",
        "/1.0/api/token",
    ] {
        assert_eq!(put(path).status, 403, "{path}");
    }
    let r = put("/latest/meta-data/");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    // A query string does not change the path.
    assert_eq!(put("/latest/api/token?x=1").status, 200);
}

#[test]
fn get_on_token_path_is_405() {
    let imds = Imds::new();
    let r = get(&imds, &view("i-a"), "/latest/api/token");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("PUT"));
}

#[test]
fn other_methods_are_405_with_allow() {
    let imds = Imds::new();
    let v = view("i-a");
    for m in ["POST", "DELETE", "PATCH", "OPTIONS", "TRACE", "get"] {
        let r = imds.handle(&v, &req(m, "/latest/meta-data/", &[]), Instant::now());
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD, PUT"), "{m}");
    }
}

#[test]
fn endpoint_disabled_is_403_for_everything() {
    let imds = Imds::new();
    let mut v = view("i-a");
    let now = Instant::now();
    let tok = token(&imds, &v, "60", now);
    v.options.http_endpoint = Switch::Disabled;
    let cases = [
        req("GET", "/latest/meta-data/instance-id", &[]),
        req(
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN_HEADER, &tok)],
        ),
        req("HEAD", "/", &[]),
        req("PUT", "/latest/api/token", &[(TTL_HEADER, "60")]),
        req("POST", "/latest/", &[]),
        req("GET", "/nope", &[]),
    ];
    for r in &cases {
        let resp = imds.handle(&v, r, now);
        assert_eq!(resp.status, 403, "{} {}", r.method, r.path);
        assert_eq!(resp.ip_ttl, None);
    }
}

#[test]
fn required_without_token_is_401_optional_without_token_is_served() {
    let imds = Imds::new();
    let mut v = view("i-a");
    assert_eq!(ok(&imds, &v, "/latest/meta-data/instance-id"), "i-a");
    v.options.http_tokens = HttpTokens::Required;
    assert_eq!(get(&imds, &v, "/latest/meta-data/instance-id").status, 401);
    assert_eq!(get(&imds, &v, "/").status, 401);
    // The token PUT itself needs no token.
    let now = Instant::now();
    let tok = token(&imds, &v, "60", now);
    assert_eq!(
        get_with(&imds, &v, "/latest/meta-data/instance-id", &tok, now),
        200
    );
}

#[test]
fn invalid_token_is_401_under_both_modes() {
    let imds = Imds::new();
    let now = Instant::now();
    for mode in [HttpTokens::Optional, HttpTokens::Required] {
        let mut v = view("i-a");
        v.options.http_tokens = mode;
        let good = token(&imds, &v, "60", now);
        // Flip one character in the middle (inside the MAC or nonce) and cut one off.
        let mut tampered = good.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        let truncated = &good[..good.len() - 1];
        let other_service = token(&Imds::new(), &v, "60", now);
        for bad in ["", "garbage", "AAAA", truncated, &tampered, &other_service] {
            assert_eq!(
                get_with(&imds, &v, "/latest/meta-data/", bad, now),
                401,
                "{mode:?} {bad:?}"
            );
        }
        assert_eq!(get_with(&imds, &v, "/latest/meta-data/", &good, now), 200);
    }
}

#[test]
fn expired_token_is_401() {
    let imds = Imds::new();
    let v = view("i-a");
    let t0 = Instant::now();
    let tok = token(&imds, &v, "10", t0);
    let path = "/latest/meta-data/instance-id";
    assert_eq!(
        get_with(&imds, &v, path, &tok, t0 + Duration::from_millis(9_999)),
        200
    );
    assert_eq!(
        get_with(&imds, &v, path, &tok, t0 + Duration::from_secs(10)),
        401
    );
    assert_eq!(
        get_with(&imds, &v, path, &tok, t0 + Duration::from_secs(3600)),
        401
    );
    // Expired is 401 even where tokens are optional: the client must learn to renew.
    let mut v = v;
    v.options.http_tokens = HttpTokens::Optional;
    assert_eq!(
        get_with(&imds, &v, path, &tok, t0 + Duration::from_secs(11)),
        401
    );
}

#[test]
fn max_ttl_token_lasts_six_hours() {
    let imds = Imds::new();
    let v = view("i-a");
    let t0 = Instant::now();
    let tok = token(&imds, &v, "21600", t0);
    let path = "/latest/meta-data/";
    assert_eq!(
        get_with(&imds, &v, path, &tok, t0 + Duration::from_secs(21_599)),
        200
    );
    assert_eq!(
        get_with(&imds, &v, path, &tok, t0 + Duration::from_secs(21_600)),
        401
    );
}

#[test]
fn token_of_instance_a_is_refused_for_instance_b() {
    let imds = Imds::new();
    let a = view("i-aaaaaaaaaaaaaaaaa");
    let mut b = view("i-bbbbbbbbbbbbbbbbb");
    let now = Instant::now();
    let tok_a = token(&imds, &a, "300", now);
    assert_eq!(
        get_with(&imds, &a, "/latest/meta-data/instance-id", &tok_a, now),
        200
    );
    assert_eq!(
        get_with(&imds, &b, "/latest/meta-data/instance-id", &tok_a, now),
        401
    );
    b.options.http_tokens = HttpTokens::Required;
    assert_eq!(
        get_with(&imds, &b, "/latest/meta-data/instance-id", &tok_a, now),
        401
    );
}

#[test]
fn tokens_are_random_and_do_not_reveal_the_instance() {
    let imds = Imds::new();
    let v = view("i-0123456789abcdef0");
    let now = Instant::now();
    let t1 = token(&imds, &v, "60", now);
    let t2 = token(&imds, &v, "60", now);
    assert_ne!(t1, t2);
    assert!(!t1.contains("i-0123"));
    // Header-safe characters only.
    assert!(
        t1.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn options_changes_apply_to_the_next_request() {
    let imds = Imds::new();
    let mut v = view("i-a");
    let now = Instant::now();
    let tok = token(&imds, &v, "60", now);
    v.options.http_tokens = HttpTokens::Required;
    assert_eq!(get(&imds, &v, "/latest/meta-data/").status, 401);
    // A token issued while optional stays valid after the switch.
    assert_eq!(get_with(&imds, &v, "/latest/meta-data/", &tok, now), 200);
    v.options.http_tokens = HttpTokens::Optional;
    assert_eq!(get(&imds, &v, "/latest/meta-data/").status, 200);
}

// ---- responses ----------------------------------------------------------------------------------

#[test]
fn head_returns_get_headers_without_body() {
    let imds = Imds::new();
    let v = view("i-a");
    for path in [
        "/latest/meta-data/",
        "/latest/meta-data/instance-id",
        "/nope",
    ] {
        let g = get(&imds, &v, path);
        let h = imds.handle(&v, &req("HEAD", path, &[]), Instant::now());
        assert_eq!(h.status, g.status, "{path}");
        assert!(h.body.is_empty(), "{path}");
        assert_eq!(h.headers, g.headers, "{path}");
        assert_eq!(
            h.header("Content-Length"),
            Some(g.body.len().to_string().as_str())
        );
    }
}

#[test]
fn every_answer_is_text_plain_from_ec2ws() {
    let imds = Imds::new();
    let v = view("i-a");
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/dynamic/instance-identity/document",
        "/latest/user-data",
        "/nope",
    ] {
        let r = get(&imds, &v, path);
        assert_eq!(r.header("Content-Type"), Some("text/plain"), "{path}");
        assert_eq!(r.header("Server"), Some("EC2ws"), "{path}");
        assert_eq!(
            r.header("Content-Length"),
            Some(r.body.len().to_string().as_str())
        );
    }
}

#[test]
fn unknown_paths_are_404() {
    let imds = Imds::new();
    let v = view("i-a");
    for path in [
        "/nope",
        "/2030-01-01/meta-data/",
        "/latest/nope",
        "/latest/meta-data/nope",
        "/latest/meta-data/instance-id/",
        "/latest/meta-data/instance-id/x",
        "/latest/meta-data//instance-id",
        "/latest/meta-data/placement/region/",
        "/latest/meta-data/iam/",
        "/latest/meta-data/spot/instance-action",
        "/latest/meta-data/tags/instance/",
        "/latest/meta-data/public-ipv4",
        "latest/meta-data/",
        "/latest/meta-data/%zz",
    ] {
        assert_eq!(get(&imds, &v, path).status, 404, "{path}");
    }
}

// ---- tree ---------------------------------------------------------------------------------------

#[test]
fn root_lists_versions_and_every_version_serves_the_tree() {
    let imds = Imds::new();
    let v = view("i-a");
    let root = ok(&imds, &v, "/");
    let versions: Vec<&str> = root.lines().collect();
    assert_eq!(versions.first(), Some(&"1.0"));
    assert_eq!(versions.last(), Some(&"latest"));
    for must in [
        "2007-01-19",
        "2009-04-04",
        "2016-09-02",
        "2018-09-24",
        "2021-03-23",
        "2021-07-15",
    ] {
        assert!(versions.contains(&must), "{must}");
    }
    for ver in versions {
        assert_eq!(
            ok(&imds, &v, &format!("/{ver}/")),
            "dynamic/\nmeta-data/\nuser-data"
        );
        assert_eq!(
            ok(&imds, &v, &format!("/{ver}")),
            "dynamic/\nmeta-data/\nuser-data"
        );
        assert_eq!(
            ok(&imds, &v, &format!("/{ver}/meta-data/instance-id")),
            "i-a"
        );
        assert_eq!(
            ok(&imds, &v, &format!("/{ver}/meta-data/")),
            ok(&imds, &v, "/latest/meta-data/")
        );
    }
}

#[test]
fn directories_are_served_with_or_without_trailing_slash() {
    let imds = Imds::new();
    let v = full_view("i-a");
    for dir in [
        "/latest/meta-data",
        "/latest/meta-data/placement",
        "/latest/meta-data/public-keys",
        "/latest/meta-data/public-keys/0",
        "/latest/meta-data/network/interfaces/macs",
        "/latest/dynamic/instance-identity",
    ] {
        let with = get(&imds, &v, &format!("{dir}/"));
        assert_eq!(with.status, 200, "{dir}/");
        assert_eq!(get(&imds, &v, dir).body, with.body, "{dir}");
    }
}

#[test]
fn meta_data_listing_is_sorted_and_matches_aws_shape() {
    let imds = Imds::new();
    let listing = ok(&imds, &view("i-a"), "/latest/meta-data/");
    assert_eq!(
        listing,
        "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nevents/\nhostname\n\
         instance-action\ninstance-id\ninstance-life-cycle\ninstance-type\nlocal-hostname\n\
         local-ipv4\nmac\nmetrics/\nnetwork/\nplacement/\nprofile\npublic-keys/\nreservation-id\n\
         security-groups\nservices/"
    );
    let full = ok(&imds, &full_view("i-a"), "/latest/meta-data/");
    for entry in [
        "iam/",
        "identity-credentials/",
        "public-hostname",
        "public-ipv4",
        "spot/",
        "tags/",
    ] {
        assert!(full.lines().any(|l| l == entry), "{entry}");
    }
    let lines: Vec<&str> = full.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(!full.ends_with('\n'));
}

#[test]
fn simple_leaves_have_per_instance_content() {
    let imds = Imds::new();
    let mut v = view("i-0abc");
    v.ami_launch_index = 3;
    let m = |p: &str| ok(&imds, &v, &format!("/latest/meta-data/{p}"));
    assert_eq!(m("ami-id"), "ami-0123456789abcdef0");
    assert_eq!(m("ami-launch-index"), "3");
    assert_eq!(m("ami-manifest-path"), "(unknown)");
    assert_eq!(m("hostname"), "ip-10-0-1-5.ec2.internal");
    assert_eq!(m("local-hostname"), "ip-10-0-1-5.ec2.internal");
    assert_eq!(m("local-ipv4"), "10.0.1.5");
    assert_eq!(m("instance-action"), "none");
    assert_eq!(m("instance-id"), "i-0abc");
    assert_eq!(m("instance-life-cycle"), "on-demand");
    assert_eq!(m("instance-type"), "t3.micro");
    assert_eq!(m("mac"), "0e:12:34:56:78:9a");
    assert_eq!(m("profile"), "default-hvm");
    assert_eq!(m("reservation-id"), "r-0ddddddddddddddddd");
    assert_eq!(m("security-groups"), "default\nweb");
    assert_eq!(
        m("placement/"),
        "availability-zone\navailability-zone-id\nregion"
    );
    assert_eq!(m("placement/availability-zone"), "us-east-1a");
    assert_eq!(m("placement/availability-zone-id"), "use1-az1");
    assert_eq!(m("placement/region"), "us-east-1");
    assert_eq!(m("services/"), "domain\npartition");
    assert_eq!(m("services/domain"), "amazonaws.com");
    assert_eq!(m("services/partition"), "aws");
    assert_eq!(m("events/"), "maintenance/");
    assert_eq!(m("events/maintenance/"), "history\nscheduled");
    assert_eq!(m("events/maintenance/scheduled"), "[]");
    assert_eq!(m("events/maintenance/history"), "[]");
    assert_eq!(m("metrics/"), "vhostmd");
    assert_eq!(m("block-device-mapping/"), "ami\nebs1\nroot");
    assert_eq!(m("block-device-mapping/root"), "/dev/xvda");
    assert_eq!(m("block-device-mapping/ebs1"), "sdf");
}

#[test]
fn services_follow_the_partition() {
    let imds = Imds::new();
    let mut v = view("i-a");
    v.region = "cn-north-1".to_string();
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/services/partition"),
        "aws-cn"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/services/domain"),
        "amazonaws.com.cn"
    );
}

#[test]
fn network_interface_by_mac() {
    let imds = Imds::new();
    let v = view("i-a");
    let base = "/latest/meta-data/network/interfaces/macs";
    assert_eq!(ok(&imds, &v, "/latest/meta-data/network/"), "interfaces/");
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/network/interfaces/"),
        "macs/"
    );
    assert_eq!(ok(&imds, &v, &format!("{base}/")), "0e:12:34:56:78:9a/");
    let m = |p: &str| ok(&imds, &v, &format!("{base}/0e:12:34:56:78:9a/{p}"));
    assert_eq!(
        m(""),
        "device-number\ninterface-id\nlocal-hostname\nlocal-ipv4s\nmac\nowner-id\n\
         security-group-ids\nsecurity-groups\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\n\
         vpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks"
    );
    assert_eq!(m("device-number"), "0");
    assert_eq!(m("interface-id"), "eni-0aaaaaaaaaaaaaaaa");
    assert_eq!(m("local-hostname"), "ip-10-0-1-5.ec2.internal");
    assert_eq!(m("local-ipv4s"), "10.0.1.5");
    assert_eq!(m("mac"), "0e:12:34:56:78:9a");
    assert_eq!(m("owner-id"), "123456789012");
    assert_eq!(m("security-group-ids"), "sg-01\nsg-02");
    assert_eq!(m("security-groups"), "default\nweb");
    assert_eq!(m("subnet-id"), "subnet-0bbbbbbbbbbbbbbbb");
    assert_eq!(m("subnet-ipv4-cidr-block"), "10.0.1.0/24");
    assert_eq!(m("vpc-id"), "vpc-0cccccccccccccccc");
    assert_eq!(m("vpc-ipv4-cidr-block"), "10.0.0.0/16");
    assert_eq!(m("vpc-ipv4-cidr-blocks"), "10.0.0.0/16\n10.1.0.0/16");
    assert_eq!(
        get(&imds, &v, &format!("{base}/0e:12:34:56:78:9a/public-ipv4s")).status,
        404
    );
    // A client escaping the colons finds the same interface.
    assert_eq!(
        ok(&imds, &v, &format!("{base}/0e%3A12%3a34:56:78:9a/mac")),
        "0e:12:34:56:78:9a"
    );
}

#[test]
fn public_address_paths_exist_only_when_public() {
    let imds = Imds::new();
    let private = view("i-a");
    let public = full_view("i-a");
    let mac = "/latest/meta-data/network/interfaces/macs/0e:12:34:56:78:9a";
    for p in [
        "/latest/meta-data/public-ipv4".to_string(),
        "/latest/meta-data/public-hostname".to_string(),
        format!("{mac}/public-ipv4s"),
        format!("{mac}/public-hostname"),
        format!("{mac}/ipv4-associations/"),
    ] {
        assert_eq!(get(&imds, &private, &p).status, 404, "{p}");
        assert_eq!(get(&imds, &public, &p).status, 200, "{p}");
    }
    assert_eq!(
        ok(&imds, &public, "/latest/meta-data/public-ipv4"),
        "127.0.100.7"
    );
    assert_eq!(
        ok(&imds, &public, "/latest/meta-data/public-hostname"),
        "ec2-127-0-100-7.compute-1.amazonaws.com"
    );
    assert_eq!(
        ok(&imds, &public, &format!("{mac}/public-ipv4s")),
        "127.0.100.7"
    );
    assert_eq!(
        ok(
            &imds,
            &public,
            &format!("{mac}/ipv4-associations/127.0.100.7")
        ),
        "10.0.1.5"
    );
    let listing = ok(&imds, &private, "/latest/meta-data/");
    assert!(!listing.contains("public-ipv4") && !listing.contains("public-hostname"));
}

#[test]
fn public_keys_list_index_equals_name() {
    let imds = Imds::new();
    let mut v = view("i-a");
    assert_eq!(ok(&imds, &v, "/latest/meta-data/public-keys/"), "0=my-key");
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/public-keys/0/"),
        "openssh-key"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/public-keys/0/openssh-key"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample my-key"
    );
    v.public_keys.clear();
    assert_eq!(get(&imds, &v, "/latest/meta-data/public-keys/").status, 404);
    assert!(!ok(&imds, &v, "/latest/meta-data/").contains("public-keys"));
}

#[test]
fn iam_only_with_a_profile() {
    let imds = Imds::new();
    let v = full_view("i-a");
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/iam/"),
        "info\nsecurity-credentials/"
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&imds, &v, "/latest/meta-data/iam/info")).expect("json");
    assert_eq!(info["Code"], "Success");
    assert_eq!(info["LastUpdated"], "2023-11-14T22:13:20Z");
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/app"
    );
    assert_eq!(info["InstanceProfileId"], "AIPAEXAMPLE");
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/iam/security-credentials/"),
        "app-role"
    );
    let c: serde_json::Value = serde_json::from_str(&ok(
        &imds,
        &v,
        "/latest/meta-data/iam/security-credentials/app-role",
    ))
    .expect("json");
    assert_eq!(c["Code"], "Success");
    assert_eq!(c["Type"], "AWS-HMAC");
    assert_eq!(c["AccessKeyId"], "ASIAROLE");
    assert_eq!(c["SecretAccessKey"], "secret-ROLE");
    assert_eq!(c["Token"], "token-ROLE");
    assert_eq!(c["Expiration"], "2023-11-14T23:13:20Z");
    assert_eq!(c["LastUpdated"], "2023-11-14T22:13:20Z");
    let none = view("i-a");
    assert_eq!(get(&imds, &none, "/latest/meta-data/iam/info").status, 404);
    assert!(!ok(&imds, &none, "/latest/meta-data/").contains("iam/"));
}

#[test]
fn identity_credentials_when_present() {
    let imds = Imds::new();
    let v = full_view("i-a");
    let base = "/latest/meta-data/identity-credentials/ec2";
    assert_eq!(
        ok(&imds, &v, &format!("{base}/")),
        "info\nsecurity-credentials/"
    );
    assert_eq!(
        ok(&imds, &v, &format!("{base}/security-credentials/")),
        "ec2-instance"
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&imds, &v, &format!("{base}/info"))).expect("json");
    assert_eq!(info["AccountId"], "123456789012");
    let c: serde_json::Value = serde_json::from_str(&ok(
        &imds,
        &v,
        &format!("{base}/security-credentials/ec2-instance"),
    ))
    .expect("json");
    assert_eq!(c["AccessKeyId"], "ASIAIDENT");
    assert_eq!(
        get(&imds, &view("i-a"), &format!("{base}/info")).status,
        404
    );
}

#[test]
fn spot_and_rebalance_only_when_set() {
    let imds = Imds::new();
    let v = full_view("i-a");
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/spot/"),
        "instance-action\ntermination-time"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/spot/instance-action"),
        "{\"action\": \"stop\", \"time\": \"2017-09-18T08:22:00Z\"}"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/spot/termination-time"),
        "2017-09-18T08:22:00Z"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/events/"),
        "maintenance/\nrecommendations/"
    );
    assert_eq!(
        ok(
            &imds,
            &v,
            "/latest/meta-data/events/recommendations/rebalance"
        ),
        "{\"noticeTime\": \"2020-11-05T08:22:00Z\"}"
    );
    let plain = view("i-a");
    assert_eq!(
        get(&imds, &plain, "/latest/meta-data/spot/instance-action").status,
        404
    );
    assert_eq!(
        get(
            &imds,
            &plain,
            "/latest/meta-data/events/recommendations/rebalance"
        )
        .status,
        404
    );
}

#[test]
fn tags_only_when_enabled() {
    let imds = Imds::new();
    let mut v = view("i-a");
    v.tags.push(("has space".to_string(), "x".to_string()));
    v.tags.push(("a/b".to_string(), "x".to_string()));
    assert_eq!(
        get(&imds, &v, "/latest/meta-data/tags/instance/Name").status,
        404
    );
    assert!(!ok(&imds, &v, "/latest/meta-data/").contains("tags/"));
    v.options.instance_metadata_tags = Switch::Enabled;
    assert_eq!(ok(&imds, &v, "/latest/meta-data/tags/"), "instance/");
    // Keys EC2 would not allow in metadata are left out, not listed unreachable.
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/tags/instance/"),
        "Name\nteam:owner"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/tags/instance/Name"),
        "web-1"
    );
    assert_eq!(
        ok(&imds, &v, "/latest/meta-data/tags/instance/team:owner"),
        "ops"
    );
}

#[test]
fn user_data_is_raw_bytes_and_404_when_absent() {
    let imds = Imds::new();
    let mut v = view("i-a");
    let r = get(&imds, &v, "/latest/user-data");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"#!/bin/sh\necho hi\n\xff\x00");
    assert_eq!(get(&imds, &v, "/2021-03-23/user-data").body, r.body);
    assert_eq!(get(&imds, &v, "/latest/user-data/").status, 404);
    for none in [None, Some(Vec::new())] {
        v.user_data = none;
        assert_eq!(get(&imds, &v, "/latest/user-data").status, 404);
        assert_eq!(ok(&imds, &v, "/latest/"), "dynamic/\nmeta-data/");
    }
}

#[test]
fn identity_document_is_aws_pretty_json() {
    let imds = Imds::new();
    let v = view("i-1234567890abcdef0");
    assert_eq!(ok(&imds, &v, "/latest/dynamic/"), "instance-identity/");
    assert_eq!(
        ok(&imds, &v, "/latest/dynamic/instance-identity/"),
        "document\npkcs7\nrsa2048\nsignature"
    );
    let doc = ok(&imds, &v, "/latest/dynamic/instance-identity/document");
    assert_eq!(
        doc,
        r#"{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "us-east-1a",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0123456789abcdef0",
  "instanceId" : "i-1234567890abcdef0",
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : "2016-11-19T16:32:11Z",
  "privateIp" : "10.0.1.5",
  "ramdiskId" : null,
  "region" : "us-east-1",
  "version" : "2017-09-30"
}"#
    );
    // It parses as JSON too.
    let parsed: serde_json::Value = serde_json::from_str(&doc).expect("json");
    assert_eq!(parsed["instanceId"], "i-1234567890abcdef0");
    for sib in ["pkcs7", "signature", "rsa2048"] {
        let b = ok(
            &imds,
            &v,
            &format!("/latest/dynamic/instance-identity/{sib}"),
        );
        let joined: String = b.lines().collect();
        assert!(!joined.is_empty());
        assert!(STANDARD_B64.decode(joined).is_ok(), "{sib} is base64");
    }
}

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as STANDARD_B64;

#[test]
fn json_strings_are_escaped() {
    let imds = Imds::new();
    let mut v = full_view("i-a");
    if let Some(iam) = v.iam.as_mut() {
        iam.credentials.token = "a\"b\\c\nd".to_string();
    }
    let c: serde_json::Value = serde_json::from_str(&ok(
        &imds,
        &v,
        "/latest/meta-data/iam/security-credentials/app-role",
    ))
    .expect("json");
    assert_eq!(c["Token"], "a\"b\\c\nd");
}

// ---- crawl --------------------------------------------------------------------------------------

/// Crawl like cloud-init's `MetadataMaterializer`: every listed name must answer 200; `N=name`
/// entries are fetched as `N/openssh-key`. Returns the number of leaves fetched.
struct Crawler<'a> {
    imds: &'a Imds,
    view: &'a InstanceView,
    token: Option<String>,
    seen: Vec<String>,
}

impl Crawler<'_> {
    fn fetch(&self, path: &str) -> String {
        let headers: Vec<(&str, &str)> = self
            .token
            .iter()
            .map(|t| (TOKEN_HEADER, t.as_str()))
            .collect();
        let r = self
            .imds
            .handle(self.view, &req("GET", path, &headers), Instant::now());
        assert_eq!(r.status, 200, "crawl: GET {path}");
        body(&r)
    }

    fn crawl(&mut self, dir: &str) -> usize {
        let listing = self.fetch(dir);
        let mut leaves = 0;
        for entry in listing.lines() {
            assert!(!entry.is_empty(), "empty line in {dir}");
            if let Some(sub) = entry.strip_suffix('/') {
                // Also without the slash, as clients that do not append it ask.
                assert_eq!(
                    self.fetch(&format!("{dir}{sub}")),
                    self.fetch(&format!("{dir}{sub}/"))
                );
                leaves += self.crawl(&format!("{dir}{sub}/"));
            } else if let Some((idx, _name)) = entry.split_once('=') {
                self.fetch(&format!("{dir}{idx}/openssh-key"));
                leaves += 1 + self.crawl(&format!("{dir}{idx}/"));
            } else {
                let path = format!("{dir}{entry}");
                self.fetch(&path);
                self.seen.push(path);
                leaves += 1;
            }
        }
        leaves
    }
}

#[test]
fn crawl_resolves_every_listed_entry() {
    let imds = Imds::new();
    let mut required = full_view("i-v2");
    required.options.http_tokens = HttpTokens::Required;
    let tok = token(&imds, &required, "21600", Instant::now());
    let cases = [
        (view("i-min"), None),
        (full_view("i-full"), None),
        (required, Some(tok)),
    ];
    for (v, token) in &cases {
        let mut c = Crawler {
            imds: &imds,
            view: v,
            token: token.clone(),
            seen: Vec::new(),
        };
        for ver in [
            "latest",
            "2021-03-23",
            "2018-09-24",
            "2016-09-02",
            "2009-04-04",
        ] {
            let n = c.crawl(&format!("/{ver}/meta-data/"));
            assert!(n >= 30, "{ver}: only {n} leaves");
            c.crawl(&format!("/{ver}/dynamic/"));
        }
        // The minimum cloud-init needs is reached by the crawl.
        let mac = "/latest/meta-data/network/interfaces/macs/0e:12:34:56:78:9a";
        for must in [
            "/latest/meta-data/instance-id".to_string(),
            "/latest/meta-data/local-hostname".to_string(),
            "/latest/meta-data/placement/availability-zone".to_string(),
            "/latest/dynamic/instance-identity/document".to_string(),
            format!("{mac}/device-number"),
            format!("{mac}/vpc-id"),
        ] {
            assert!(c.seen.contains(&must), "{must} not crawled");
        }
    }
}
