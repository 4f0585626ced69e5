//! The core instance lifecycle against a running ec2d, over the EC2 Query API with SigV4.
//!
//!   lifecycle_smoke [--endpoint http://127.0.0.1:4566] [--key test] [--secret test]
//!                   [--region us-east-1] [--instance-type t3.micro] [--timeout-scale N]
//!
//! DescribeImages (Owner amazon, name ec2d-tiny-x86_64) → RunInstances → running → console ready
//! line with the instance id → StopInstances → stopped → StartInstances → running → console
//! `ec2d-tiny: boot 2` (the root volume kept its data) → TerminateInstances → terminated.
//! Each step is printed with its time; the last line is `SMOKE: PASS …` and the exit status 0, or
//! `SMOKE: FAIL …` and 1. Timeouts are generous: under nested TCG an L2 boot takes ~7–14 s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;

struct Client {
    host: String,
    key: String,
    secret: String,
    region: String,
}

type Fail = String;

impl Client {
    /// One signed POST; returns the body of a 200 answer, or an error naming the EC2 error code.
    fn call(
        &self,
        action: &str,
        params: &[(&str, &str)],
        read_timeout: Duration,
    ) -> Result<String, Fail> {
        let mut body = form_urlencoded::Serializer::new(String::new());
        body.append_pair("Action", action);
        body.append_pair("Version", "2016-11-15");
        for (k, v) in params {
            body.append_pair(k, v);
        }
        let body = body.finish();
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
        ];
        let identity: Identity =
            Credentials::new(&self.key, &self.secret, None, None, "smoke").into();
        let signing = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing params: {e}"))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            format!("http://{}/", self.host),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| format!("signable: {e}"))?;
        let (instructions, _) = sign(signable, &signing)
            .map_err(|e| format!("sign: {e}"))?
            .into_parts();
        for (k, v) in instructions.headers() {
            headers.push((k.to_string(), v.to_string()));
        }
        let mut s = TcpStream::connect(&self.host)
            .map_err(|e| format!("{action}: connect {}: {e}", self.host))?;
        s.set_read_timeout(Some(read_timeout)).ok();
        let mut req = String::from("POST / HTTP/1.1\r\n");
        for (k, v) in &headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ));
        s.write_all(req.as_bytes())
            .map_err(|e| format!("{action}: write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| format!("{action}: read: {e}"))?;
        let out = String::from_utf8_lossy(&raw).into_owned();
        let status: u16 = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let resp = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        let resp = if out
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(&resp)
        } else {
            resp
        };
        if status != 200 {
            return Err(format!(
                "{action}: HTTP {status} {}: {}",
                tag(&resp, "Code").unwrap_or_default(),
                tag(&resp, "Message").unwrap_or_else(|| resp.chars().take(400).collect())
            ));
        }
        Ok(resp)
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The text of the first `<name>…</name>` element.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].to_string())
}

struct Smoke {
    c: Client,
    t0: Instant,
    scale: f64,
}

impl Smoke {
    fn step(&self, what: &str, since: Instant) {
        println!(
            "SMOKE: [{:7.2}s] {what} (+{:.2}s)",
            self.t0.elapsed().as_secs_f64(),
            since.elapsed().as_secs_f64()
        );
    }

    fn timeout(&self, secs: u64) -> Duration {
        Duration::from_secs_f64(secs as f64 * self.scale)
    }

    fn state(&self, id: &str) -> Result<String, Fail> {
        let r = self.c.call(
            "DescribeInstances",
            &[("InstanceId.1", id)],
            self.timeout(60),
        )?;
        let st = r
            .split("<instanceState>")
            .nth(1)
            .and_then(|s| tag(s, "name"))
            .ok_or_else(|| {
                format!(
                    "DescribeInstances: no instanceState for {id}: {}",
                    r.chars().take(400).collect::<String>()
                )
            })?;
        Ok(st)
    }

    fn wait_state(&self, id: &str, want: &str, secs: u64) -> Result<(), Fail> {
        let since = Instant::now();
        let deadline = since + self.timeout(secs);
        let mut last = String::new();
        loop {
            let st = self.state(id)?;
            if st != last {
                println!(
                    "SMOKE: [{:7.2}s]   {id} is {st}",
                    self.t0.elapsed().as_secs_f64()
                );
                last = st.clone();
            }
            if st == want {
                self.step(&format!("{id} reached {want}"), since);
                return Ok(());
            }
            if st == "terminated" && want != "terminated" {
                return Err(format!("{id} terminated while waiting for {want}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timeout after {:?} waiting for {id} to be {want} (still {st})",
                    self.timeout(secs)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn console(&self, id: &str) -> Result<String, Fail> {
        let r = self.c.call(
            "GetConsoleOutput",
            &[("InstanceId", id), ("Latest", "true")],
            self.timeout(60),
        )?;
        let b64 = tag(&r, "output").unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("GetConsoleOutput: output is not base64: {e}"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Polls the console until every line in `want` appears (after the `after`-th occurrence of
    /// `marker`, when given, so a second boot is told from the first).
    fn wait_console(&self, id: &str, want: &[&str], secs: u64) -> Result<String, Fail> {
        let since = Instant::now();
        let deadline = since + self.timeout(secs);
        loop {
            let text = self.console(id)?;
            if want.iter().all(|w| text.contains(w)) {
                for w in want {
                    println!(
                        "SMOKE: [{:7.2}s]   console: {w}",
                        self.t0.elapsed().as_secs_f64()
                    );
                }
                self.step(
                    &format!("console of {id} shows {} line(s)", want.len()),
                    since,
                );
                return Ok(text);
            }
            if Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "timeout after {:?} waiting for console lines {want:?}; last console lines:\n{}",
                    self.timeout(secs),
                    tail.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// ec2d may still be starting (it is launched just before this client): wait for its port.
    fn wait_endpoint(&self, secs: u64) -> Result<(), Fail> {
        let since = Instant::now();
        let deadline = since + self.timeout(secs);
        loop {
            match TcpStream::connect(&self.c.host) {
                Ok(_) => {
                    self.step(
                        &format!("endpoint {} accepts connections", self.c.host),
                        since,
                    );
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "endpoint {} not reachable after {:?}: {e}",
                        self.c.host,
                        self.timeout(secs)
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn run(&self, instance_type: &str) -> Result<(), Fail> {
        self.wait_endpoint(120)?;
        // DescribeImages may build or verify the built-in AMI on first use.
        let since = Instant::now();
        let r = self.c.call(
            "DescribeImages",
            &[
                ("Owner.1", "amazon"),
                ("Filter.1.Name", "name"),
                ("Filter.1.Value.1", "ec2d-tiny-x86_64"),
            ],
            self.timeout(900),
        )?;
        let ami = tag(&r, "imageId").ok_or_else(|| {
            format!(
                "DescribeImages: no ec2d-tiny-x86_64 image owned by amazon: {}",
                r.chars().take(600).collect::<String>()
            )
        })?;
        self.step(&format!("DescribeImages -> {ami}"), since);

        let since = Instant::now();
        let r = self.c.call(
            "RunInstances",
            &[
                ("ImageId", &ami),
                ("InstanceType", instance_type),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ],
            self.timeout(600),
        )?;
        let id = tag(&r, "instanceId").ok_or("RunInstances: no instanceId in the answer")?;
        self.step(&format!("RunInstances {instance_type} -> {id}"), since);

        let result = self.lifecycle(&id);
        if result.is_err() {
            // Leave nothing running behind a failure.
            let _ = self.c.call(
                "TerminateInstances",
                &[("InstanceId.1", &id)],
                self.timeout(60),
            );
        }
        result
    }

    fn lifecycle(&self, id: &str) -> Result<(), Fail> {
        self.wait_state(id, "running", 120)?;
        let ready = format!("ec2d-tiny: instance {id} ready");
        self.wait_console(id, &["ec2d-tiny: boot 1", &ready], 180)?;

        let since = Instant::now();
        self.c
            .call("StopInstances", &[("InstanceId.1", id)], self.timeout(60))?;
        self.step("StopInstances", since);
        self.wait_state(id, "stopped", 180)?;

        let since = Instant::now();
        self.c
            .call("StartInstances", &[("InstanceId.1", id)], self.timeout(60))?;
        self.step("StartInstances", since);
        self.wait_state(id, "running", 120)?;
        self.wait_console(id, &["ec2d-tiny: boot 2", &ready], 180)?;

        let since = Instant::now();
        self.c.call(
            "TerminateInstances",
            &[("InstanceId.1", id)],
            self.timeout(60),
        )?;
        self.step("TerminateInstances", since);
        self.wait_state(id, "terminated", 180)?;
        Ok(())
    }
}

fn main() -> ExitCode {
    let mut endpoint = "http://127.0.0.1:4566".to_string();
    let mut key = "test".to_string();
    let mut secret = "test".to_string();
    let mut region = "us-east-1".to_string();
    let mut instance_type = "t3.micro".to_string();
    let mut scale = 1.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("lifecycle_smoke: {name} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--endpoint" => endpoint = val("--endpoint"),
            "--key" => key = val("--key"),
            "--secret" => secret = val("--secret"),
            "--region" => region = val("--region"),
            "--instance-type" => instance_type = val("--instance-type"),
            "--timeout-scale" => {
                scale = val("--timeout-scale").parse().unwrap_or_else(|_| {
                    eprintln!("lifecycle_smoke: --timeout-scale needs a number");
                    std::process::exit(2)
                })
            }
            "-h" | "--help" => {
                println!(
                    "usage: lifecycle_smoke [--endpoint URL] [--key K] [--secret S] [--region R] [--instance-type T] [--timeout-scale N]"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("lifecycle_smoke: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .trim_end_matches('/')
        .to_string();
    let smoke = Smoke {
        c: Client {
            host,
            key,
            secret,
            region,
        },
        t0: Instant::now(),
        scale,
    };
    println!("SMOKE: lifecycle against {endpoint}");
    match smoke.run(&instance_type) {
        Ok(()) => {
            println!(
                "SMOKE: PASS run -> running -> ready -> stop -> stopped -> start -> running -> boot 2 -> terminated in {:.1}s",
                smoke.t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "SMOKE: FAIL after {:.1}s: {e}",
                smoke.t0.elapsed().as_secs_f64()
            );
            ExitCode::FAILURE
        }
    }
}
