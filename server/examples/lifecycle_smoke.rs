//! The core instance lifecycle against a running ec2d, over the EC2 Query API with SigV4, and
//! the instance's network.
//!
//!   lifecycle_smoke [--endpoint http://127.0.0.1:4566] [--key test] [--secret test]
//!                   [--region us-east-1] [--instance-type t3.micro] [--timeout-scale N]
//!                   [--no-network] [--ami tiny|debian-12]
//!
//! DescribeImages (Owner amazon, name ec2d-tiny-x86_64) → CreateSecurityGroup +
//! AuthorizeSecurityGroupIngress (tcp 80 from 0.0.0.0/0) → RunInstances (that group,
//! `MetadataOptions.HttpTokens=required`, `#!` user data) → running → console ready line with the
//! instance id → the network:
//! - console `ec2d-tiny: eth0 <private ip>/<prefix> via <router>` (DHCP from the fabric),
//! - console `ec2d-tiny: imds: instance <id> (IMDSv2)` (the AMI's hook, with a token),
//! - the user data (over 9001 bytes, so IMDS sends it in jumbo frames) ran and printed its own
//!   instance id and identity document, read with the AMI's `imds` helper (IMDSv2 only, as the
//!   instance requires tokens), then started `busybox httpd -p 80 -h /www`,
//! - `GET http://<public ip>/` (ec2d's listener → the VPC → the guest) returns
//!   `hello from <id>`, and `/big.txt` (300,000 bytes) arrives intact,
//! - RevokeSecurityGroupIngress → a new connection to the public IP is refused;
//!
//! → StopInstances → stopped → StartInstances → running → console `ec2d-tiny: boot 2` (the root
//! volume kept its data), the same DHCP lease and `user data: already ran for <id>` →
//! TerminateInstances → terminated. `--no-network` skips the group, the user data and the
//! network checks (the lifecycle alone). Each step is printed with its time; the last line is
//! `SMOKE: PASS …` and the exit status 0, or `SMOKE: FAIL …` and 1. Timeouts are generous: under
//! nested TCG an L2 boot takes ~7–14 s.
//!
//! `--ami debian-12` runs the lifecycle on the built-in Debian image instead (built for this
//! engine: `ec2d images debian-12`), with cloud-init doing the guest's part: CreateSecurityGroup
//! (tcp 22) → RunInstances (HttpTokens=required, cloud-config user data) → running → console:
//! bootcmd `ec2d-debian: boot 1`, runcmd `ec2d-debian: runcmd <id>` and cloud-init's `finished
//! … Datasource DataSourceEc2Local` → sshd's banner on the public IP → StopInstances (systemd
//! powers off on the ACPI power button) → stopped → StartInstances → running → `ec2d-debian:
//! boot 2` (the counter on the root volume survived) and cloud-init finished again → terminated.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    /// Also prove the network: DHCP, IMDSv2, user data, the public IP and a revoke.
    network: bool,
}

/// The debian-12 scenario's user data: a boot counter kept on the root volume (bootcmd runs on
/// every boot) and a once-per-instance runcmd line with the id cloud-init got from IMDS. The
/// commands are quoted: a plain YAML scalar cannot hold ": ".
const DEBIAN_USER_DATA: &str = r#"#cloud-config
bootcmd:
  - 'n=$(( $(cat /var/lib/ec2d-smoke-boots 2>/dev/null || echo 0) + 1 )); echo $n > /var/lib/ec2d-smoke-boots; echo "ec2d-debian: boot $n"'
runcmd:
  - 'echo "ec2d-debian: runcmd $(cat /var/lib/cloud/data/instance-id)"'

"#;

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
        let mut next_progress = since + PROGRESS_EVERY;
        loop {
            let st = self.state(id)?;
            if Instant::now() > next_progress {
                next_progress += PROGRESS_EVERY;
                println!(
                    "SMOKE: [{:7.2}s]   still waiting for {want}; {id} is {st}",
                    self.t0.elapsed().as_secs_f64()
                );
            }
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

    /// Polls the console until every line in `want` appears (after the last occurrence of
    /// `after`, when given, so a second boot is told from the first). Returns the console text
    /// (from that occurrence on).
    fn wait_console(
        &self,
        id: &str,
        after: Option<&str>,
        want: &[&str],
        secs: u64,
    ) -> Result<String, Fail> {
        self.wait_console_unless(id, after, want, &[], secs)
    }

    /// [`Smoke::wait_console`], failing at once when a line in `bad` appears.
    fn wait_console_unless(
        &self,
        id: &str,
        after: Option<&str>,
        want: &[&str],
        bad: &[&str],
        secs: u64,
    ) -> Result<String, Fail> {
        let since = Instant::now();
        let deadline = since + self.timeout(secs);
        let mut next_progress = since + PROGRESS_EVERY;
        loop {
            let full = self.console(id)?;
            let text = match after {
                Some(m) => full.rfind(m).map(|i| &full[i..]).unwrap_or_default(),
                None => full.as_str(),
            };
            if let Some(b) = bad.iter().find(|b| text.contains(**b)) {
                return Err(format!(
                    "console of {id} shows {:?}",
                    line_with(text, b).unwrap_or_default()
                ));
            }
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
                return Ok(text.to_string());
            }
            if Instant::now() > next_progress {
                // A slow boot (debian-12 under nested TCG takes minutes) shows that it moves.
                next_progress += PROGRESS_EVERY;
                let last = full.lines().rev().find(|l| !l.trim().is_empty());
                println!(
                    "SMOKE: [{:7.2}s]   still waiting; console has {} lines, the last: {:?}",
                    self.t0.elapsed().as_secs_f64(),
                    full.lines().count(),
                    last.unwrap_or_default().trim_end_matches('\r')
                );
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

    /// The id of the built-in image named `name`.
    fn builtin_ami(&self, name: &str) -> Result<String, Fail> {
        // DescribeImages may build or verify the built-in AMI on first use.
        let since = Instant::now();
        let r = self.c.call(
            "DescribeImages",
            &[
                ("Owner.1", "amazon"),
                ("Filter.1.Name", "name"),
                ("Filter.1.Value.1", name),
            ],
            self.timeout(900),
        )?;
        let ami = tag(&r, "imageId").ok_or_else(|| {
            format!(
                "DescribeImages: no {name} image owned by amazon: {}",
                r.chars().take(600).collect::<String>()
            )
        })?;
        self.step(&format!("DescribeImages -> {ami}"), since);
        Ok(ami)
    }

    /// A new security group open to the world on tcp `port`.
    fn open_group(&self, port: &str) -> Result<String, Fail> {
        let since = Instant::now();
        let name = format!("smoke-{port}-{}", std::process::id());
        let r = self.c.call(
            "CreateSecurityGroup",
            &[
                ("GroupName", &name),
                (
                    "GroupDescription",
                    "lifecycle_smoke: one tcp port from anywhere",
                ),
            ],
            self.timeout(60),
        )?;
        let gid = tag(&r, "groupId").ok_or("CreateSecurityGroup: no groupId")?;
        self.port(&gid, "AuthorizeSecurityGroupIngress", port)?;
        self.step(
            &format!(
                "CreateSecurityGroup {gid} + AuthorizeSecurityGroupIngress tcp {port} from 0.0.0.0/0"
            ),
            since,
        );
        Ok(gid)
    }

    /// RunInstances with one instance of `params`; returns its id.
    fn run_one(&self, params: &[(&str, String)], instance_type: &str) -> Result<String, Fail> {
        let since = Instant::now();
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = self.c.call("RunInstances", &borrowed, self.timeout(600))?;
        let id = tag(&r, "instanceId").ok_or("RunInstances: no instanceId in the answer")?;
        self.step(&format!("RunInstances {instance_type} -> {id}"), since);
        Ok(id)
    }

    /// Stop, then start again: back to running (each within its number of seconds).
    fn stop_start(&self, id: &str, stop_secs: u64, start_secs: u64) -> Result<(), Fail> {
        let since = Instant::now();
        self.c
            .call("StopInstances", &[("InstanceId.1", id)], self.timeout(60))?;
        self.step("StopInstances", since);
        self.wait_state(id, "stopped", stop_secs)?;
        let since = Instant::now();
        self.c
            .call("StartInstances", &[("InstanceId.1", id)], self.timeout(60))?;
        self.step("StartInstances", since);
        self.wait_state(id, "running", start_secs)
    }

    fn terminate(&self, id: &str) -> Result<(), Fail> {
        let since = Instant::now();
        self.c.call(
            "TerminateInstances",
            &[("InstanceId.1", id)],
            self.timeout(60),
        )?;
        self.step("TerminateInstances", since);
        self.wait_state(id, "terminated", 180)
    }

    /// Passes `result` on; after a failure, terminates `id` so nothing is left running.
    fn or_terminate(&self, id: &str, result: Result<(), Fail>) -> Result<(), Fail> {
        if result.is_err() {
            let _ = self.c.call(
                "TerminateInstances",
                &[("InstanceId.1", id)],
                self.timeout(60),
            );
        }
        result
    }

    fn run(&self, instance_type: &str) -> Result<(), Fail> {
        self.wait_endpoint(120)?;
        let ami = self.builtin_ami("ec2d-tiny-x86_64")?;

        let mut params: Vec<(&str, String)> = vec![
            ("ImageId", ami.clone()),
            ("InstanceType", instance_type.to_string()),
            ("MinCount", "1".into()),
            ("MaxCount", "1".into()),
        ];
        let mut sg = None;
        if self.network {
            let gid = self.open_group("80")?;
            params.push(("SecurityGroupId.1", gid.clone()));
            params.push(("MetadataOptions.HttpTokens", "required".into()));
            params.push((
                "UserData",
                base64::engine::general_purpose::STANDARD.encode(user_data()),
            ));
            sg = Some(gid);
        }
        let id = self.run_one(&params, instance_type)?;
        self.or_terminate(&id, self.lifecycle(&id, sg.as_deref()))
    }

    /// The lifecycle on debian-12, with cloud-init doing the guest's part (see the module doc).
    fn run_debian(&self, instance_type: &str) -> Result<(), Fail> {
        self.wait_endpoint(120)?;
        let ami = self.builtin_ami("debian-12-amd64-ec2d")?;
        let gid = self.open_group("22")?;
        let params: Vec<(&str, String)> = vec![
            ("ImageId", ami),
            ("InstanceType", instance_type.to_string()),
            ("MinCount", "1".into()),
            ("MaxCount", "1".into()),
            ("SecurityGroupId.1", gid),
            ("MetadataOptions.HttpTokens", "required".into()),
            (
                "UserData",
                base64::engine::general_purpose::STANDARD.encode(DEBIAN_USER_DATA),
            ),
        ];
        let id = self.run_one(&params, instance_type)?;
        self.or_terminate(&id, self.debian_lifecycle(&id))
    }

    fn debian_lifecycle(&self, id: &str) -> Result<(), Fail> {
        // systemd and cloud-init are far slower than the tiny init under nested TCG.
        self.wait_state(id, "running", 600)?;
        let runcmd = format!("ec2d-debian: runcmd {id}");
        let text = self.wait_console_unless(
            id,
            None,
            &[
                "ec2d-debian: boot 1",
                &runcmd,
                "Datasource DataSourceEc2Local",
            ],
            &["Kernel panic", "ec2d-debian: boot 2"],
            3600,
        )?;
        let finished = line_with(&text, "Datasource DataSourceEc2Local").unwrap_or_default();
        println!(
            "SMOKE: [{:7.2}s]   cloud-init: {}",
            self.t0.elapsed().as_secs_f64(),
            finished.trim()
        );

        // sshd, started by systemd with host keys cloud-init generated, through the public IP.
        let (_, public) = self.addresses(id)?;
        let public = public.ok_or_else(|| format!("{id} has no public IP address"))?;
        let addr: SocketAddr = format!("{public}:22")
            .parse()
            .map_err(|e| format!("public IP {public}: {e}"))?;
        let since = Instant::now();
        let deadline = since + self.timeout(300);
        let banner = loop {
            match ssh_banner(addr, self.timeout(30)) {
                Ok(b) if b.starts_with("SSH-2.0-OpenSSH") => break b,
                other if Instant::now() > deadline => {
                    return Err(format!("no OpenSSH banner from {addr}: {other:?}"));
                }
                _ => std::thread::sleep(Duration::from_secs(1)),
            }
        };
        self.step(&format!("sshd on {addr} -> {banner:?}"), since);

        // A graceful stop: the VMM presses the ACPI power button and systemd shuts down.
        self.stop_start(id, 900, 600)?;
        // Until systemd-logind runs, the guest ignores the power button, so the terminate waits
        // for the second boot to finish (as a user of a real instance would).
        self.wait_console(
            id,
            Some("ec2d-debian: boot 2"),
            &["ec2d-debian: boot 2", "Datasource DataSourceEc2Local"],
            3600,
        )?;
        self.terminate(id)
    }

    /// Authorizes or revokes tcp `port` from 0.0.0.0/0 on group `gid`.
    fn port(&self, gid: &str, action: &str, port: &str) -> Result<(), Fail> {
        self.c.call(
            action,
            &[
                ("GroupId", gid),
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", port),
                ("IpPermissions.1.ToPort", port),
                ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
            ],
            self.timeout(60),
        )?;
        Ok(())
    }

    /// The instance's private and public IPv4 addresses from DescribeInstances.
    fn addresses(&self, id: &str) -> Result<(String, Option<String>), Fail> {
        let r = self.c.call(
            "DescribeInstances",
            &[("InstanceId.1", id)],
            self.timeout(60),
        )?;
        let private = tag(&r, "privateIpAddress")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("DescribeInstances: {id} has no privateIpAddress"))?;
        Ok((private, tag(&r, "ipAddress").filter(|s| !s.is_empty())))
    }

    fn lifecycle(&self, id: &str, sg: Option<&str>) -> Result<(), Fail> {
        self.wait_state(id, "running", 120)?;
        let ready = format!("ec2d-tiny: instance {id} ready");
        self.wait_console(id, None, &["ec2d-tiny: boot 1", &ready], 180)?;

        let mut dhcp_line = None;
        if let Some(sg) = sg {
            dhcp_line = Some(self.network_checks(id, sg)?);
        }

        self.stop_start(id, 180, 120)?;
        self.wait_console(
            id,
            Some("ec2d-tiny: boot 2"),
            &["ec2d-tiny: boot 2", &ready],
            180,
        )?;
        if let Some(dhcp) = &dhcp_line {
            // The new VM's NIC is plugged into the same ENI: same lease, and the user data
            // (already run for this instance id) is skipped.
            let skipped = format!("ec2d-tiny: user data: already ran for {id} (exit 0), skipped");
            self.wait_console(id, Some("ec2d-tiny: boot 2"), &[dhcp, &skipped], 300)?;
        }

        self.terminate(id)
    }

    /// DHCP, IMDSv2 from the user data, the web server on the public IP, and the revoke.
    /// Returns the DHCP line (`ec2d-tiny: eth0 <ip>/<prefix> via <router>`).
    fn network_checks(&self, id: &str, sg: &str) -> Result<String, Fail> {
        let (private, public) = self.addresses(id)?;
        let public = public.ok_or_else(|| format!("{id} has no public IP address"))?;
        println!(
            "SMOKE: [{:7.2}s]   {id}: private {private}, public {public}",
            self.t0.elapsed().as_secs_f64()
        );

        // DHCP from the fabric over virtio-net.
        let lease = format!("ec2d-tiny: eth0 {private}/");
        self.wait_console(id, None, &[&lease], 180)?;

        // The hook's own IMDSv2 session (token PUT, then GETs with it).
        let imds = format!("ec2d-tiny: imds: instance {id} (IMDSv2)");
        let text = self.wait_console_unless(
            id,
            None,
            &[&imds],
            &[
                "ec2d-tiny: imds: no instance id",
                "(IMDSv1: the token request failed)",
            ],
            180,
        )?;
        // The lease lines were complete before the IMDS line started.
        let dhcp = line_with(&text, &lease).unwrap_or_default();
        if !dhcp.contains(" via ") {
            return Err(format!("the DHCP line has no router: {dhcp:?}"));
        }
        let mtu = line_with(&text, "ec2d-tiny: eth0 hostname ").unwrap_or_default();
        println!(
            "SMOKE: [{:7.2}s]   DHCP: {dhcp}\nSMOKE: [{:7.2}s]   DHCP: {mtu}",
            self.t0.elapsed().as_secs_f64(),
            self.t0.elapsed().as_secs_f64()
        );

        // The user data (larger than a 9001-byte frame) came from IMDS, ran, and read its own
        // identity with a token: HttpTokens=required refuses anything else.
        let ud_id = format!("ud: instance-id={id}");
        let text = self.wait_console_unless(
            id,
            None,
            &[
                "ec2d-tiny: user data: running",
                &ud_id,
                "ud: httpd on 80",
                "ud: eth0 virtio features=",
                "ec2d-tiny: user data: exit 0",
            ],
            &[
                "ec2d-tiny: user data: could not be read",
                "ec2d-tiny: user data: skipped",
                "ec2d-tiny: user data: none",
                "ec2d-tiny: user data: ignored",
                "ec2d-tiny: user data: exit 1",
                "ec2d-tiny: user data: exit 2",
            ],
            600,
        )?;
        let doc = line_with(&text, "ud: identity=").unwrap_or_default();
        for want in [
            format!("\"instanceId\":\"{id}\""),
            format!("\"privateIp\":\"{private}\""),
        ] {
            if !doc.contains(&want) {
                return Err(format!("identity document lacks {want}: {doc:?}"));
            }
        }
        println!(
            "SMOKE: [{:7.2}s]   identity document has instanceId {id} and privateIp {private}",
            self.t0.elapsed().as_secs_f64()
        );

        // A virtio NIC (microvm engine): the driver took mergeable RX buffers and the MTU.
        let features = line_with(&text, "ud: eth0 virtio features=")
            .and_then(|l| l.split_once('=').map(|(_, f)| f.trim().to_string()))
            .unwrap_or_default();
        if features.is_empty() {
            println!(
                "SMOKE: [{:7.2}s]   eth0 is not a virtio device (no feature bits)",
                self.t0.elapsed().as_secs_f64()
            );
        } else {
            let bit = |n: usize| features.as_bytes().get(n) == Some(&b'1');
            if !(bit(3) && bit(15)) {
                return Err(format!(
                    "eth0's virtio features {features} lack MTU (bit 3) or MRG_RXBUF (bit 15)"
                ));
            }
            println!(
                "SMOKE: [{:7.2}s]   virtio-net negotiated MTU and MRG_RXBUF (features {features})",
                self.t0.elapsed().as_secs_f64()
            );
        }

        // The web server, through ec2d's listener on the public IP.
        let addr: SocketAddr = format!("{public}:80")
            .parse()
            .map_err(|e| format!("public IP {public}: {e}"))?;
        let since = Instant::now();
        let deadline = since + self.timeout(60);
        let body = loop {
            match http_get(addr, "/", self.timeout(30)) {
                Ok((200, body)) => break body,
                other if Instant::now() > deadline => {
                    return Err(format!("GET http://{addr}/: {other:?}"));
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let want = format!("hello from {id}\n");
        if body != want.as_bytes() {
            return Err(format!(
                "GET http://{addr}/ returned {:?}, not {want:?}",
                String::from_utf8_lossy(&body)
            ));
        }
        self.step(
            &format!("GET http://{addr}/ -> {:?}", want.trim_end()),
            since,
        );

        let since = Instant::now();
        let big = match http_get(addr, "/big.txt", self.timeout(60)) {
            Ok((200, body)) => body,
            other => return Err(format!("GET http://{addr}/big.txt: {other:?}")),
        };
        let line = format!("{id}\n");
        let expect: Vec<u8> = line.bytes().cycle().take(BIG_FILE).collect();
        if big != expect {
            return Err(format!(
                "GET http://{addr}/big.txt: {} bytes, not the {BIG_FILE} expected",
                big.len()
            ));
        }
        self.step(
            &format!("GET http://{addr}/big.txt -> {BIG_FILE} bytes, as written"),
            since,
        );

        // Revoked, the port is closed: a new connection is refused.
        let since = Instant::now();
        self.port(sg, "RevokeSecurityGroupIngress", "80")?;
        let deadline = since + self.timeout(30);
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                r if Instant::now() > deadline => {
                    return Err(format!(
                        "{addr} still not refused {:?} after the revoke: {r:?}",
                        self.timeout(30)
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.step(
            &format!("RevokeSecurityGroupIngress tcp 80 -> connection to {addr} refused"),
            since,
        );
        Ok(dhcp)
    }
}

/// How often a long console wait prints where the boot is.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Size of `/www/big.txt`: the instance id line repeated, well over one 9001-byte frame.
const BIG_FILE: usize = 300_000;

/// The user data: the instance's identity through the AMI's `imds` helper (IMDSv2; the instance
/// is launched with HttpTokens=required), then `busybox httpd` on port 80 serving the id. The
/// comment padding makes the script larger than one 9001-byte frame, so IMDS has to send it to
/// the guest in jumbo frames.
fn user_data() -> String {
    let mut s = format!(
        r#"#!/bin/sh
ID=$(imds get meta-data/instance-id)
echo "ud: instance-id=$ID"
echo "ud: identity=$(imds get dynamic/instance-identity/document | tr -d ' \n')"
mkdir -p /www
echo "hello from $ID" > /www/index.html
yes "$ID" | head -c {BIG_FILE} > /www/big.txt
busybox httpd -p 80 -h /www
echo "ud: httpd on 80"
echo "ud: eth0 virtio features=$(cat /sys/class/net/eth0/device/features 2>/dev/null)"
"#
    );
    for i in 0..180 {
        s.push_str(&format!(
            "# padding {i:03}: makes this script larger than one 9001-byte frame\n"
        ));
    }
    s
}

/// The first line of `text` containing `needle`, without its line ending.
fn line_with(text: &str, needle: &str) -> Option<String> {
    text.lines()
        .find(|l| l.contains(needle))
        .map(|l| l.trim_end_matches('\r').to_string())
}

/// The first line an SSH server sends (RFC 4253 §4.2), without its line ending.
fn ssh_banner(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 255 && s.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// A plain HTTP/1.0 GET; returns the status and the body (read until the server closes).
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, raw[split + 4..].to_vec()))
}

fn main() -> ExitCode {
    let mut endpoint = "http://127.0.0.1:4566".to_string();
    let mut key = "test".to_string();
    let mut secret = "test".to_string();
    let mut region = "us-east-1".to_string();
    let mut instance_type = "t3.micro".to_string();
    let mut scale = 1.0f64;
    let mut network = true;
    let mut ami = "tiny".to_string();
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
            "--no-network" => network = false,
            "--ami" => ami = val("--ami"),
            "-h" | "--help" => {
                println!(
                    "usage: lifecycle_smoke [--endpoint URL] [--key K] [--secret S] [--region R] [--instance-type T] [--timeout-scale N] [--no-network] [--ami tiny|debian-12]"
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
        network,
    };
    println!("SMOKE: lifecycle of {ami} against {endpoint}");
    let result = match ami.as_str() {
        "tiny" => smoke.run(&instance_type),
        "debian-12" => smoke.run_debian(&instance_type),
        other => {
            eprintln!("lifecycle_smoke: --ami is tiny or debian-12, not {other}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) if ami == "debian-12" => {
            println!(
                "SMOKE: PASS debian-12: run -> running -> bootcmd, runcmd, cloud-init finished (Ec2Local) -> sshd on the public IP -> stop -> stopped -> start -> running -> boot 2 -> terminated in {:.1}s",
                smoke.t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(()) => {
            println!(
                "SMOKE: PASS run -> running -> ready{} -> stop -> stopped -> start -> running -> boot 2{} -> terminated in {:.1}s",
                if network {
                    " -> DHCP -> IMDSv2 -> user data -> GET public IP -> revoke -> refused"
                } else {
                    ""
                },
                if network {
                    " -> same lease, user data skipped"
                } else {
                    ""
                },
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
