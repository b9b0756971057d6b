//! The conformance suite: every scenario runs against our broker and against nats-server, with
//! async-nats (and raw sockets where the wire itself is the point) as the client.

use std::time::Duration;

use async_nats::{ConnectOptions, Event, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;

use crate::harness::{Kind, Raw, Server, Setup, TestTls, TestUser, both, settle, settle_via};

const WAIT: Duration = Duration::from_secs(5);

both!(
    pub_sub_in_order,
    wildcards,
    queue_groups_deliver_once_and_spread,
    request_reply,
    headers_round_trip,
    no_responders_fails_fast,
    unsubscribe_after_max,
    max_payload_enforced,
    token_auth,
    user_password_auth,
    nkey_auth,
    permissions_enforced,
    tls_listener,
    reconnect_after_restart,
    thousand_subscribers_all_receive,
    echo_off,
    raw_protocol_transcripts,
);

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WAIT, sub.next()).await.expect("timed out waiting for a message").unwrap()
}

async fn nothing_more(sub: &mut async_nats::Subscriber) {
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        panic!("unexpected message on {}: {:?}", msg.subject, msg.payload);
    }
}

async fn pub_sub_in_order(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("orders.new").await.unwrap();
    settle(&client).await;
    let other = async_nats::connect(server.url()).await.unwrap();
    for idx in 0..100 {
        other.publish("orders.new", Bytes::from(format!("order {idx}"))).await.unwrap();
    }
    other.publish("orders.old", Bytes::from_static(b"not for you")).await.unwrap();
    other.flush().await.unwrap();
    for idx in 0..100 {
        let msg = next(&mut sub).await;
        assert_eq!(msg.subject.as_str(), "orders.new");
        assert_eq!(msg.payload, Bytes::from(format!("order {idx}")));
    }
    nothing_more(&mut sub).await;
}

async fn wildcards(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut star = client.subscribe("a.*").await.unwrap();
    let mut tail = client.subscribe("a.>").await.unwrap();
    let mut all = client.subscribe(">").await.unwrap();
    let mut middle = client.subscribe("*.b.*").await.unwrap();
    client.flush().await.unwrap();
    for subject in ["a.b", "a.b.c", "x", "a", "q.b.z"] {
        client.publish(subject, Bytes::from(subject)).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(next(&mut star).await.subject.as_str(), "a.b");
    nothing_more(&mut star).await;
    assert_eq!(next(&mut tail).await.subject.as_str(), "a.b");
    assert_eq!(next(&mut tail).await.subject.as_str(), "a.b.c");
    nothing_more(&mut tail).await;
    for subject in ["a.b", "a.b.c", "x", "a", "q.b.z"] {
        assert_eq!(next(&mut all).await.subject.as_str(), subject);
    }
    assert_eq!(next(&mut middle).await.subject.as_str(), "a.b.c");
    assert_eq!(next(&mut middle).await.subject.as_str(), "q.b.z");
    nothing_more(&mut middle).await;
}

async fn queue_groups_deliver_once_and_spread(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let first = async_nats::connect(server.url()).await.unwrap();
    let second = async_nats::connect(server.url()).await.unwrap();
    let mut members = vec![
        first.queue_subscribe("work", "workers".into()).await.unwrap(),
        first.queue_subscribe("work", "workers".into()).await.unwrap(),
        second.queue_subscribe("work", "workers".into()).await.unwrap(),
        second.queue_subscribe("work", "workers".into()).await.unwrap(),
    ];
    let mut other_group = second.queue_subscribe("work", "auditors".into()).await.unwrap();
    let mut plain = second.subscribe("work").await.unwrap();
    settle(&first).await;
    settle(&second).await;
    let publisher = async_nats::connect(server.url()).await.unwrap();
    for idx in 0..400 {
        publisher.publish("work", Bytes::from(format!("{idx}"))).await.unwrap();
    }
    publisher.flush().await.unwrap();
    for idx in 0..400 {
        assert_eq!(next(&mut plain).await.payload, Bytes::from(format!("{idx}")));
        assert_eq!(next(&mut other_group).await.payload, Bytes::from(format!("{idx}")));
    }
    let mut seen = Vec::new();
    let mut counts = Vec::new();
    for member in &mut members {
        let mut count = 0;
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(300), member.next()).await
        {
            seen.push(String::from_utf8(msg.payload.to_vec()).unwrap().parse::<u32>().unwrap());
            count += 1;
        }
        counts.push(count);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..400).collect::<Vec<_>>(), "each message to exactly one member");
    assert!(counts.iter().all(|count| *count > 20), "spread across members: {counts:?}");
}

async fn request_reply(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let responder = async_nats::connect(server.url()).await.unwrap();
    let mut requests = responder.subscribe("svc.echo").await.unwrap();
    settle(&responder).await;
    let serve = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&request.payload);
            responder.publish(request.reply.unwrap(), reply.into()).await.unwrap();
        }
    });
    let client = async_nats::connect(server.url()).await.unwrap();
    for idx in 0..20 {
        let reply = tokio::time::timeout(
            WAIT,
            client.request("svc.echo", Bytes::from(format!("hi {idx}"))),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.payload, Bytes::from(format!("echo: hi {idx}")));
    }
    serve.abort();
}

async fn headers_round_trip(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("h").await.unwrap();
    client.flush().await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Cohort-Request", "abc-123");
    headers.append("Multi", "one");
    headers.append("Multi", "two");
    client
        .publish_with_reply_and_headers("h", "reply.to", headers, Bytes::from_static(b"body"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let msg = next(&mut sub).await;
    assert_eq!(msg.payload, Bytes::from_static(b"body"));
    assert_eq!(msg.reply.as_ref().map(|reply| reply.as_str()), Some("reply.to"));
    let got = msg.headers.unwrap();
    assert_eq!(got.get("Cohort-Request").map(|value| value.as_str()), Some("abc-123"));
    let multi: Vec<&str> = got.get_all("Multi").map(|value| value.as_str()).collect();
    assert_eq!(multi, ["one", "two"]);
}

async fn no_responders_fails_fast(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let started = std::time::Instant::now();
    let err = client.request("nobody.home", Bytes::new()).await.unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders, "{err}");
    // The default request timeout is 10 s: failing well inside it proves the 503 arrived.
    assert!(started.elapsed() < Duration::from_secs(5));

    // The same status reaches a hand-made inbox used for scatter/gather.
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.unwrap();
    client.publish_with_reply("nobody.home", format!("{inbox}.1"), Bytes::new()).await.unwrap();
    let status = next(&mut replies).await;
    assert_eq!(status.status, Some(async_nats::StatusCode::NO_RESPONDERS));
    assert!(status.payload.is_empty());
}

async fn unsubscribe_after_max(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("count").await.unwrap();
    sub.unsubscribe_after(3).await.unwrap();
    client.flush().await.unwrap();
    for idx in 0..6 {
        client.publish("count", Bytes::from(format!("{idx}"))).await.unwrap();
    }
    client.flush().await.unwrap();
    for idx in 0..3 {
        assert_eq!(next(&mut sub).await.payload, Bytes::from(format!("{idx}")));
    }
    let end = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert!(end.is_none(), "subscription ends after its maximum: {end:?}");
}

async fn max_payload_enforced(kind: Kind) {
    let setup = Setup { max_payload: Some(1024), ..Setup::default() };
    let server = Server::start(kind, &setup).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    assert_eq!(client.server_info().max_payload, 1024);
    let err = client.publish("big", Bytes::from(vec![b'x'; 2000])).await.unwrap_err();
    assert_eq!(err.kind(), async_nats::PublishErrorKind::MaxPayloadExceeded);
    // A client that ignores INFO is refused by the server itself.
    let mut raw = Raw::connect(server.addr()).await;
    let out = raw.transcript(b"CONNECT {\"verbose\":false}\r\nPUB big 2000\r\n", WAIT).await;
    assert_eq!(out, "-ERR 'Maximum Payload Violation'\r\n<EOF>");
}

async fn token_auth(kind: Kind) {
    let setup = Setup { token: Some("s3cr3t".into()), ..Setup::default() };
    let server = Server::start(kind, &setup).await;
    let client = ConnectOptions::with_token("s3cr3t".into()).connect(server.url()).await.unwrap();
    assert!(client.server_info().auth_required);
    client.publish("ok", Bytes::new()).await.unwrap();
    client.flush().await.unwrap();
    assert!(ConnectOptions::with_token("wrong".into()).connect(server.url()).await.is_err());
    assert!(async_nats::connect(server.url()).await.is_err());
}

async fn user_password_auth(kind: Kind) {
    let setup = Setup {
        users: vec![TestUser {
            user: Some("alice".into()),
            password: Some("secret".into()),
            ..TestUser::default()
        }],
        ..Setup::default()
    };
    let server = Server::start(kind, &setup).await;
    let good = ConnectOptions::with_user_and_password("alice".into(), "secret".into());
    good.connect(server.url()).await.unwrap();
    let bad = ConnectOptions::with_user_and_password("alice".into(), "guess".into());
    assert!(bad.connect(server.url()).await.is_err());
    let unknown = ConnectOptions::with_user_and_password("mallory".into(), "secret".into());
    assert!(unknown.connect(server.url()).await.is_err());
}

async fn nkey_auth(kind: Kind) {
    let user = nkeys::KeyPair::new_user();
    let setup = Setup {
        users: vec![TestUser { nkey: Some(user.public_key()), ..TestUser::default() }],
        ..Setup::default()
    };
    let server = Server::start(kind, &setup).await;
    let seed = user.seed().unwrap();
    let client = ConnectOptions::with_nkey(seed).connect(server.url()).await.unwrap();
    client.publish("signed.in", Bytes::new()).await.unwrap();
    client.flush().await.unwrap();
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert!(ConnectOptions::with_nkey(stranger).connect(server.url()).await.is_err());
}

async fn permissions_enforced(kind: Kind) {
    let setup = Setup {
        users: vec![
            TestUser {
                user: Some("alice".into()),
                password: Some("secret".into()),
                publish_allow: vec!["a.>".into()],
                publish_deny: vec!["a.secret".into()],
                subscribe_allow: vec!["a.>".into()],
                subscribe_deny: vec!["a.hidden".into()],
                ..TestUser::default()
            },
            TestUser {
                user: Some("root".into()),
                password: Some("root".into()),
                ..TestUser::default()
            },
        ],
        ..Setup::default()
    };
    let server = Server::start(kind, &setup).await;
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let alice = ConnectOptions::with_user_and_password("alice".into(), "secret".into())
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let Event::ServerError(err) = event {
                    let _ = errors_tx.send(err.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    let root = ConnectOptions::with_user_and_password("root".into(), "root".into())
        .connect(server.url())
        .await
        .unwrap();
    let mut wide = alice.subscribe("a.>").await.unwrap();
    let _denied = alice.subscribe("b.x").await.unwrap();
    settle_via(&alice, &root, "a.settle").await;
    let mut watch = root.subscribe(">").await.unwrap();
    settle(&root).await;
    // Forget the settling probes.
    for sub in [&mut wide, &mut watch] {
        while tokio::time::timeout(Duration::from_millis(200), sub.next()).await.is_ok() {}
    }
    let violation = tokio::time::timeout(WAIT, errors.recv()).await.unwrap().unwrap();
    assert!(
        violation.to_lowercase().contains("permissions violation for subscription to \"b.x\""),
        "{violation}"
    );

    alice.publish("a.secret", Bytes::from_static(b"1")).await.unwrap();
    alice.publish("b.c", Bytes::from_static(b"2")).await.unwrap();
    alice.publish("a.fine", Bytes::from_static(b"3")).await.unwrap();
    alice.flush().await.unwrap();
    for subject in ["a.secret", "b.c"] {
        let violation = tokio::time::timeout(WAIT, errors.recv()).await.unwrap().unwrap();
        assert!(
            violation
                .to_lowercase()
                .contains(&format!("permissions violation for publish to \"{subject}\"")),
            "{violation}"
        );
    }
    assert_eq!(next(&mut watch).await.subject.as_str(), "a.fine");
    nothing_more(&mut watch).await;

    // A denied subject does not reach alice through her wildcard subscription.
    root.publish("a.hidden", Bytes::from_static(b"no")).await.unwrap();
    root.publish("a.visible", Bytes::from_static(b"yes")).await.unwrap();
    root.flush().await.unwrap();
    assert_eq!(next(&mut wide).await.subject.as_str(), "a.fine");
    assert_eq!(next(&mut wide).await.subject.as_str(), "a.visible");
    nothing_more(&mut wide).await;
}

async fn tls_listener(kind: Kind) {
    let tls = TestTls::generate();
    let setup = Setup { tls: Some(tls.clone()), ..Setup::default() };
    let server = Server::start(kind, &setup).await;
    let client = ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(tls.ca.clone())
        .connect(server.url())
        .await
        .unwrap();
    assert!(client.server_info().tls_required);
    let mut sub = client.subscribe("secure").await.unwrap();
    client.publish("secure", Bytes::from_static(b"over tls")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.payload, Bytes::from_static(b"over tls"));
    // A client that does not trust the certificate is refused.
    let untrusting = ConnectOptions::new()
        .require_tls(true)
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(untrusting.is_err());
}

async fn reconnect_after_restart(kind: Kind) {
    let mut server = Server::start(kind, &Setup::default()).await;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event.to_string());
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    let mut sub = client.subscribe("survives").await.unwrap();
    client.flush().await.unwrap();
    server.stop().await;
    wait_event(&mut events, "disconnected").await;
    server.restart().await;
    wait_event(&mut events, "connected").await;
    // The subscription was restored on the new server: publish from a fresh client.
    let other = async_nats::connect(server.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        other.publish("survives", Bytes::from_static(b"again")).await.unwrap();
        other.flush().await.unwrap();
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(msg.payload, Bytes::from_static(b"again"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "subscription not restored");
    }
}

async fn wait_event(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} event"))
            .unwrap();
        if event.contains(want) && !(want == "connected" && event.contains("disconnected")) {
            return;
        }
    }
}

async fn thousand_subscribers_all_receive(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..20 {
        let client = async_nats::connect(server.url()).await.unwrap();
        for _ in 0..50 {
            subs.push(client.subscribe("fleet.all").await.unwrap());
        }
        settle(&client).await;
        clients.push(client);
    }
    assert_eq!(subs.len(), 1000);
    let publisher = async_nats::connect(server.url()).await.unwrap();
    for idx in 0..3 {
        publisher.publish("fleet.all", Bytes::from(format!("{idx}"))).await.unwrap();
    }
    publisher.flush().await.unwrap();
    for sub in &mut subs {
        for idx in 0..3 {
            assert_eq!(next(sub).await.payload, Bytes::from(format!("{idx}")));
        }
    }
}

async fn echo_off(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let quiet = ConnectOptions::new().no_echo().connect(server.url()).await.unwrap();
    let mut own = quiet.subscribe("chat").await.unwrap();
    let listener = async_nats::connect(server.url()).await.unwrap();
    settle_via(&quiet, &listener, "probe").await;
    let mut theirs = listener.subscribe("chat").await.unwrap();
    settle(&listener).await;
    quiet.publish("chat", Bytes::from_static(b"mine")).await.unwrap();
    quiet.flush().await.unwrap();
    // `flush` only empties the client's socket buffer; it is not a server round trip. Hearing
    // "mine" proves the server routed it before "yours" is sent, so an echo of "mine" to the
    // quiet client would be queued ahead of "yours" and caught below.
    assert_eq!(next(&mut theirs).await.payload, Bytes::from_static(b"mine"));
    listener.publish("chat", Bytes::from_static(b"yours")).await.unwrap();
    listener.flush().await.unwrap();
    assert_eq!(next(&mut theirs).await.payload, Bytes::from_static(b"yours"));
    assert_eq!(next(&mut own).await.payload, Bytes::from_static(b"yours"));
    nothing_more(&mut own).await;
}

/// Wire-level behaviour that both servers must show byte for byte.
async fn raw_protocol_transcripts(kind: Kind) {
    let server = Server::start(kind, &Setup::default()).await;
    let quiet = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n";
    let cases: &[(&[u8], &str)] = &[
        (b"PING\r\n", "PONG\r\n"),
        (
            b"CONNECT {\"verbose\":true}\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\nUNSUB 1\r\nPING\r\n",
            "+OK\r\n+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\nPONG\r\n+OK\r\nPONG\r\n",
        ),
        (b"sub foo 1\r\npub foo 2\r\nhi\r\nping\r\n", "MSG foo 1 2\r\nhi\r\nPONG\r\n"),
        (b"SUB inbox.> 1\r\nPUB foo inbox.1 2\r\nhi\r\nPING\r\n", "HMSG inbox.1 1 35 35\r\nNATS/1.0 503\r\nNats-Subject: foo\r\n\r\n\r\nPONG\r\n"),
        (b"SUB foo 1\r\nHPUB foo r 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nPING\r\n", "HMSG foo 1 r 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nPONG\r\n"),
        (b"SUB foo..bar 1\r\nSUB foo.>.x 2\r\nPING\r\n", "-ERR 'Invalid Subject'\r\n-ERR 'Invalid Subject'\r\nPONG\r\n"),
        (b"SUB foo.* 1\r\nPUB foo.* 2\r\nhi\r\nPING\r\n", "MSG foo.* 1 2\r\nhi\r\nPONG\r\n"),
        (b"SUB foo 1\r\nUNSUB 1 2\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\nPING\r\n", "MSG foo 1 1\r\na\r\nMSG foo 1 1\r\nb\r\nPONG\r\n"),
        (b"SUB foo 1\r\nSUB bar 1\r\nPUB bar 1\r\nb\r\nPING\r\n", "PONG\r\n"),
        (b"UNSUB 99\r\nPING\r\n", "PONG\r\n"),
        (b"HELLO\r\n", "-ERR 'Unknown Protocol Operation'\r\n<EOF>"),
        (b"PUB foo 5\r\nhi\r\nPING\r\n", "-ERR 'Unknown Protocol Operation'\r\n<EOF>"),
        (b"PUB foo 99999999\r\n", "-ERR 'Maximum Payload Violation'\r\n<EOF>"),
    ];
    for (input, expect) in cases {
        let mut raw = Raw::connect(server.addr()).await;
        let mut bytes = quiet.to_vec();
        if input.starts_with(b"CONNECT") || input.starts_with(b"PING") {
            bytes.clear();
        }
        bytes.extend_from_slice(input);
        raw.send(&bytes).await;
        let out = raw.read_at_least(expect.len(), WAIT).await;
        assert_eq!(out, *expect, "input {:?}", String::from_utf8_lossy(input));
    }
    let mut long = quiet.to_vec();
    long.extend_from_slice(b"PUB ");
    long.extend(std::iter::repeat_n(b'a', 5000));
    let mut raw = Raw::connect(server.addr()).await;
    assert_eq!(raw.transcript(&long, WAIT).await, "-ERR 'maximum control line exceeded'\r\n<EOF>");
}
