//! `xmpp:` notifications through a real XMPP server: Prosody, started by the test on a free
//! loopback port with a certificate from a CA the test made and two accounts, `cohort` (the
//! sender) and `ops` (offline, so what reaches it is kept in Prosody's own offline store, which
//! the test reads). Daemons with the built-in `notify` agent send through it; a wrong password
//! and an untrusted certificate fail with the reason, and deliver nothing.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{BrokerKind, Fleet, NodeSpec, stdout};

const DOMAIN: &str = "cohort.test";

/// Prosody, stopped by its process group (the PID the test spawned) when dropped.
struct Prosody {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Prosody {
    fn start() -> Prosody {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        // A CA and the server's certificate for the domain, signed by it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "cohort test XMPP CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(path.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(path.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::create_dir_all(path.join("data")).unwrap();

        let port = cohort_test_support::free_port();
        let config = path.join("prosody.cfg.lua");
        std::fs::write(
            &config,
            format!(
                "pidfile = {pid:?}\ndata_path = {data:?}\ndaemonize = false\nrun_as_root = true\n\
                 c2s_ports = {{ {port} }}\nc2s_interfaces = {{ \"127.0.0.1\" }}\n\
                 c2s_direct_tls_ports = {{ }}\ns2s_ports = {{ }}\ncomponent_ports = {{ }}\n\
                 http_ports = {{ }}\nhttps_ports = {{ }}\n\
                 modules_enabled = {{ \"roster\"; \"saslauth\"; \"tls\"; \"disco\"; \"offline\" }}\n\
                 modules_disabled = {{ \"s2s\" }}\n\
                 authentication = \"internal_hashed\"\nc2s_require_encryption = true\n\
                 certificates = {certs:?}\n\
                 log = {{ {{ levels = {{ min = \"info\" }}, to = \"console\" }} }}\n\
                 VirtualHost \"{DOMAIN}\"\n  ssl = {{ key = {key:?}; certificate = {cert:?} }}\n",
                pid = path.join("prosody.pid").display().to_string(),
                data = path.join("data").display().to_string(),
                certs = path.display().to_string(),
                key = path.join("key.pem").display().to_string(),
                cert = path.join("cert.pem").display().to_string(),
            ),
        )
        .unwrap();
        for (user, password) in [("cohort", "sender-secret"), ("ops", "ops-secret")] {
            let out = Command::new("prosodyctl")
                .arg("--config")
                .arg(&config)
                .args(["register", user, DOMAIN, password])
                .output()
                .expect("prosodyctl runs (apt-get install prosody)");
            assert!(
                out.status.success(),
                "register {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(path.join("prosody.log")).unwrap();
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&config)
            .arg("-F")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("prosody starts");
        let prosody = Prosody { child, dir, port };
        let listening = cohort_test_support::wait_for_listener(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
        );
        assert!(listening, "prosody is not listening: {}", prosody.log());
        prosody
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("prosody.log")).unwrap_or_default()
    }

    /// What Prosody keeps for an offline `user` (its internal storage, one file per user).
    fn offline(&self, user: &str) -> String {
        let file =
            self.path("data").join("cohort%2etest").join("offline").join(format!("{user}.list"));
        std::fs::read_to_string(file).unwrap_or_default()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn notifier(prosody: &Prosody, password_file: &Path, ca: bool) -> String {
    let ca_file = if ca {
        format!("ca_file = {:?}\n", prosody.path("ca.pem").display().to_string())
    } else {
        String::new()
    };
    format!(
        "[notify]\nenabled = true\n[notify.xmpp]\njid = \"cohort@{DOMAIN}\"\npassword_file = {:?}\n\
         server = \"127.0.0.1:{}\"\ntimeout = \"20s\"\n{ca_file}",
        password_file.display().to_string(),
        prosody.port
    )
}

/// One `sendmsg` to `node`; its reply (status code, message, data).
fn sendmsg(fleet: &Fleet, node: &str, subject: &str, message: &str) -> Value {
    let recipient = format!("recipient=xmpp:ops@{DOMAIN}");
    let subject = format!("subject={subject}");
    let message = format!("message={message}");
    let output =
        fleet.cli(&["rpc", "notify", "sendmsg", &recipient, &subject, &message, "-I", node, "-j"]);
    let doc: Value = serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)));
    assert_eq!(doc["replies"].as_array().map(Vec::len), Some(1), "{doc}");
    doc["replies"][0].clone()
}

#[test]
fn xmpp_notifications_through_a_real_prosody() {
    if std::env::var_os("COHORT_SLOW_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skipped: set COHORT_SLOW_TESTS=1 to run the XMPP notification test");
        return;
    }
    let prosody = Prosody::start();
    let secrets = tempfile::tempdir().unwrap();
    let good = secrets.path().join("good");
    let bad = secrets.path().join("bad");
    std::fs::write(&good, "sender-secret\n").unwrap();
    std::fs::write(&bad, "not-the-password\n").unwrap();
    let spec = |name| NodeSpec {
        name,
        fact_file: "facts.yaml",
        facts: "role: notifier\n",
        classes: "",
        collectives: &["cohort"],
    };
    let specs = [spec("x-good"), spec("x-badpass"), spec("x-noca")];
    let fleet = Fleet::start_configured(BrokerKind::Cohort, &specs, &|node, _| match node {
        "x-good" => notifier(&prosody, &good, true),
        "x-badpass" => notifier(&prosody, &bad, true),
        _ => notifier(&prosody, &good, false),
    });

    let reply = sendmsg(&fleet, "x-good", "Provisioned n1", "n1 is in production; 42 resources");
    assert_eq!(reply["statuscode"], 0, "{reply}\n{}", prosody.log());
    let status = reply["data"]["status"].as_str().unwrap_or("");
    assert_eq!(status, format!("sent to xmpp:ops@{DOMAIN} as cohort@{DOMAIN}"), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !prosody.offline("ops").contains("42 resources") {
        assert!(
            Instant::now() < deadline,
            "not delivered: {:?}\n{}",
            prosody.offline("ops"),
            prosody.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored = prosody.offline("ops");
    assert!(stored.contains("Provisioned n1"), "the subject travels: {stored}");
    assert!(stored.contains(&format!("cohort@{DOMAIN}")), "from the configured account: {stored}");

    let reply = sendmsg(&fleet, "x-badpass", "wrong password", "never delivered (password)");
    assert_ne!(reply["statuscode"], 0, "{reply}");
    let why = reply["statusmsg"].as_str().unwrap_or("");
    assert!(why.contains("login refused") && why.contains(&format!("cohort@{DOMAIN}")), "{why}");

    let reply = sendmsg(&fleet, "x-noca", "untrusted", "never delivered (certificate)");
    assert_ne!(reply["statuscode"], 0, "{reply}");
    let why = reply["statusmsg"].as_str().unwrap_or("");
    assert!(why.contains(&format!("TLS with {DOMAIN}: invalid peer certificate")), "{why}");

    let stored = prosody.offline("ops");
    assert!(!stored.contains("never delivered"), "a failed send delivered something: {stored}");
    assert_eq!(stored.matches("42 resources").count(), 1, "delivered once: {stored}");
}
