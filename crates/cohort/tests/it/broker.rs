//! `cohort broker` as users run it: flags, config file, metrics, signals, errors.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cohort_test_support::{free_port, wait_for_listener};
use futures::StreamExt;

use crate::process::{Daemon, cohort, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_clients_and_metrics_then_stops_on_sigterm() {
    let port = free_port();
    let metrics_port = free_port();
    let mut command = cohort();
    command.args([
        "broker",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let mut broker = Daemon::spawn(command);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_for_listener(addr, Duration::from_secs(10)), "{}", broker.stderr_text());

    let client = async_nats::connect(format!("nats://{addr}")).await.unwrap();
    let mut sub = client.subscribe("hello").await.unwrap();
    client.publish("hello", Bytes::from_static(b"world")).await.unwrap();
    client.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(msg.payload, Bytes::from_static(b"world"));

    let metrics = http_get(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/metrics").await;
    assert!(metrics.contains("cohort_broker_messages_in_total 1"), "{metrics}");

    broker.signal("TERM");
    let status = broker.wait_exit(Duration::from_secs(10)).expect("broker did not stop");
    assert!(status.success(), "{status:?}: {}", broker.stderr_text());
    assert!(broker.stderr_text().contains("SIGTERM: shutting down"));
}

#[test]
fn sigint_also_stops_it() {
    let port = free_port();
    let mut command = cohort();
    command.args(["broker", "--listen", &format!("127.0.0.1:{port}")]);
    let mut broker = Daemon::spawn(command);
    assert!(wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10)));
    broker.signal("INT");
    let status = broker.wait_exit(Duration::from_secs(10)).expect("broker did not stop");
    assert!(status.success());
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file_port = free_port();
    let flag_port = free_port();
    let config = write(
        dir.path(),
        "broker.toml",
        &format!("listen = \"127.0.0.1:{file_port}\"\n[authorization]\ntoken = \"s3cr3t\"\n"),
    );
    let mut command = cohort();
    command.args(["broker", "--config"]).arg(&config);
    command.args(["--listen", &format!("127.0.0.1:{flag_port}")]);
    let _broker = Daemon::spawn(command);
    let addr = SocketAddr::from(([127, 0, 0, 1], flag_port));
    assert!(wait_for_listener(addr, Duration::from_secs(10)));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        assert!(async_nats::connect(format!("nats://{addr}")).await.is_err(), "token required");
        async_nats::ConnectOptions::with_token("s3cr3t".into())
            .connect(format!("nats://{addr}"))
            .await
            .unwrap();
    });
}

#[track_caller]
fn check_refused(config_text: Option<&str>, extra: &[&str], expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = cohort();
    command.arg("broker");
    if let Some(text) = config_text {
        command.arg("--config").arg(write(dir.path(), "broker.toml", text));
    }
    command.args(extra);
    let output = command.output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in expect {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    check_refused(Some("max_paylaod = 10\n"), &[], &["broker.toml", "max_paylaod"]);
    check_refused(Some("max_payload = \"big\"\n"), &[], &["broker.toml", "max_payload"]);
    check_refused(
        Some("[[authorization.users]]\nuser = \"alice\"\n"),
        &[],
        &["authorization.users[0]", "password"],
    );
    check_refused(
        Some("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n"),
        &[],
        &["/nonexistent/cert.pem"],
    );
    check_refused(None, &["--config", "/nonexistent/broker.toml"], &["/nonexistent/broker.toml"]);
    check_refused(None, &["--listen", "not-an-address"], &["not-an-address"]);
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    check_refused(None, &["--listen", &addr], &["cannot listen on", &addr]);
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// One connection asking for a million subscriptions gets `max_subscriptions` (10,000) of them
/// and a `-ERR 'maximum subscriptions exceeded'` for each of the rest, as nats-server answers;
/// the connection stays usable and the broker's memory stays bounded (issue 14, item 6: RSS
/// went from 16 MB to 757 MB).
#[test]
fn a_million_subscriptions_are_refused_past_the_limit() {
    use std::io::{BufRead, BufReader, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = cohort();
    command.args(["broker", "--listen", &addr.to_string()]);
    let broker = Daemon::spawn(command);
    assert!(wait_for_listener(addr, Duration::from_secs(10)), "{}", broker.stderr_text());
    let before = rss_kib(broker.child.id());
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    // Replies are read while the SUBs are written, so neither side's buffers fill.
    let counting = std::thread::spawn(move || {
        let (mut refused, mut other) = (0u64, Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return (refused, other, "closed".to_owned());
            }
            match line.trim_end() {
                "-ERR 'maximum subscriptions exceeded'" => refused += 1,
                "PONG" => return (refused, other, "PONG".to_owned()),
                "+OK" | "PING" => {}
                text => other.push(text.to_owned()),
            }
        }
    });
    let mut writer = stream;
    writer.write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n").unwrap();
    let mut batch = Vec::with_capacity(1 << 20);
    for sid in 1..=1_000_000u32 {
        write!(batch, "SUB s.{sid} {sid}\r\n").unwrap();
        if batch.len() > 1 << 19 {
            writer.write_all(&batch).unwrap();
            batch.clear();
        }
    }
    batch.extend_from_slice(b"PING\r\n");
    writer.write_all(&batch).unwrap();
    let (refused, other, end) = counting.join().unwrap();
    assert_eq!(end, "PONG", "the connection was closed: {other:?}\n{}", broker.stderr_text());
    assert_eq!(refused, 990_000, "{other:?}");
    assert!(other.is_empty(), "{other:?}");
    // Still usable: a subscription within the limit gets its messages.
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    writer.write_all(b"PUB s.1 2\r\nhi\r\nPING\r\n").unwrap();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line.trim_end().to_owned());
    }
    assert_eq!(lines, ["MSG s.1 1 2", "hi", "PONG"]);
    let after = rss_kib(broker.child.id());
    assert!(after < before + 100 * 1024, "broker RSS grew from {before} KiB to {after} KiB");
}

/// A raw client connection logged in as `user`, reading what the broker says.
struct Raw {
    writer: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl Raw {
    fn login(addr: SocketAddr, user: &str) -> Raw {
        use std::io::{BufRead, Write};
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut info = String::new();
        reader.read_line(&mut info).unwrap();
        assert!(info.starts_with("INFO "), "{info}");
        let mut writer = stream;
        write!(writer, "CONNECT {{\"verbose\":false,\"user\":\"{user}\",\"pass\":\"pw\"}}\r\n")
            .unwrap();
        Raw { writer, reader }
    }

    /// Sends SUBs for `sids` then PING; the broker's lines until PONG (or the close).
    fn subscribe(&mut self, sids: std::ops::RangeInclusive<u32>) -> Vec<String> {
        use std::io::{BufRead, Write};
        let mut batch = String::new();
        for sid in sids {
            batch.push_str(&format!("SUB s.{sid} {sid}\r\n"));
        }
        batch.push_str("PING\r\n");
        let _ = self.writer.write_all(batch.as_bytes());
        let mut said = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                said.push("(closed)".to_owned());
                return said;
            }
            match line.trim_end() {
                "PONG" => return said,
                "PING" => {}
                text => said.push(text.to_owned()),
            }
        }
    }
}

fn refusals(said: &[String]) -> usize {
    said.iter().filter(|line| *line == "-ERR 'maximum subscriptions exceeded'").count()
}

/// Issue 14, item 6, per account: one user's connections and subscriptions are bounded in
/// all, whatever it spreads them over, with nats-server's errors; what it gives back can be
/// taken again.
#[test]
fn one_user_is_bounded_however_many_connections_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "max_subscriptions = 10\nmax_user_connections = 3\nmax_user_subscriptions = 25\n\
         [[authorization.users]]\nuser = \"mallory\"\npassword = \"pw\"\n\
         [[authorization.users]]\nuser = \"alice\"\npassword = \"pw\"\n",
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = cohort();
    command.args(["broker", "--listen", &addr.to_string(), "--config"]).arg(&config);
    let broker = Daemon::spawn(command);
    assert!(wait_for_listener(addr, Duration::from_secs(10)), "{}", broker.stderr_text());

    let mut first = Raw::login(addr, "mallory");
    assert_eq!(refusals(&first.subscribe(1..=15)), 5, "per connection: 10");
    let mut second = Raw::login(addr, "mallory");
    assert_eq!(refusals(&second.subscribe(1..=10)), 0);
    let mut third = Raw::login(addr, "mallory");
    let said = third.subscribe(1..=10);
    assert_eq!(refusals(&said), 5, "per user: 25 in all: {said:?}");
    let mut fourth = Raw::login(addr, "mallory");
    let said = fourth.subscribe(1..=1);
    assert_eq!(said, ["-ERR 'maximum account active connections exceeded'", "(closed)"]);
    // Another user is not affected.
    let mut alice = Raw::login(addr, "alice");
    assert_eq!(refusals(&alice.subscribe(1..=10)), 0);
    // A closed connection gives its slot and its subscriptions back.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = Raw::login(addr, "mallory");
        let said = again.subscribe(1..=10);
        if refusals(&said) == 0 && !said.contains(&"(closed)".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing given back: {said:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = broker.stderr_text();
    assert!(log.contains("too many connections for one user"), "{log}");
}
