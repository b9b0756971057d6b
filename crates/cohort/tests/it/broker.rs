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
