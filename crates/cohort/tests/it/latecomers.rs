//! Discovery hands over to the call before the slowest node has answered it: that node must
//! still be counted, never lost or reported as unexpected, and with security on its call reply
//! (verified) must stand in for its discovery reply (checked only when needed).
//!
//! Two hand-made nodes on our broker, signing with node credentials: `fast` answers discovery
//! at once and the call late; `slow` answers discovery late and the call at once, so its call
//! reply arrives before the client knows it exists.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cohort_client::{Call, Client, ClientOptions, ClientSecurity, DiscoveryOptions, Targets};
use cohort_proto::{
    AgentName, Collective, Filter, Identity, PROTOCOL, Reply, Request, StatusCode, VERSION, now_ms,
};
use cohort_security::{Credential, KeyKind, Role, SecretKey, Signer, Trust};
use futures::StreamExt;

fn member(issuer: &SecretKey, name: &str, role: Role) -> Signer {
    let key = SecretKey::generate(KeyKind::Member, rand::random());
    let credential =
        Credential::issue(issuer, name, role, key.public(), name.into(), 0, i64::MAX).unwrap();
    Signer::new(key, credential).unwrap()
}

/// A node that answers discovery after `discovery_delay` and `rpcutil` after `call_delay`.
async fn node(url: String, signer: Signer, discovery_delay: Duration, call_delay: Duration) {
    let bus = async_nats::connect(url).await.unwrap();
    let mut requests = futures::stream::select(
        bus.subscribe("cohort.broadcast.agent.discovery").await.unwrap(),
        bus.subscribe("cohort.broadcast.agent.rpcutil").await.unwrap(),
    );
    bus.flush().await.unwrap();
    let name = signer.credential().claims.name.clone();
    while let Some(message) = requests.next().await {
        let Some(reply_to) = message.reply.clone() else { continue };
        let inner = cohort_security::peek(&message.payload).unwrap();
        let request = Request::from_bytes(inner.as_bytes()).unwrap();
        let delay =
            if request.agent.as_str() == "discovery" { discovery_delay } else { call_delay };
        let reply = Reply {
            protocol: PROTOCOL.to_owned(),
            version: VERSION,
            request_id: request.id,
            sender: Identity::new(&name).unwrap(),
            agent: request.agent,
            action: request.body.action,
            time: now_ms(SystemTime::now()),
            status: StatusCode::Ok,
            status_message: "OK".to_owned(),
            data: serde_json::Map::new(),
        };
        let sealed = signer.seal(&String::from_utf8(reply.to_bytes()).unwrap());
        let bus = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            bus.publish(reply_to, sealed.into()).await.unwrap();
            bus.flush().await.unwrap();
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_slow_to_answer_discovery_is_still_counted() {
    let config = cohort_broker::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cohort_broker::Config::default()
    };
    let broker = cohort_broker::Broker::bind(config).await.unwrap().spawn();
    let url = broker.url();
    let issuer = SecretKey::generate(KeyKind::Issuer, rand::random());
    // The margins are wide so a loaded machine cannot reorder the two phases: discovery hands
    // over about 50 ms after `fast` answers, a second before `slow` does.
    let nodes = [
        tokio::spawn(node(
            url.clone(),
            member(&issuer, "fast.example.net", Role::Node),
            Duration::ZERO,
            Duration::from_millis(1500),
        )),
        tokio::spawn(node(
            url.clone(),
            member(&issuer, "slow.example.net", Role::Node),
            Duration::from_millis(1000),
            Duration::ZERO,
        )),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = Client::connect(ClientOptions {
        brokers: vec![url],
        caller: "client=alice".into(),
        sender: "test".into(),
        connect_timeout: Duration::from_secs(10),
        security: ClientSecurity {
            signer: Some(member(&issuer, "alice", Role::Client)),
            trust: Some(Arc::new(Trust::new(vec![issuer.public().clone()]))),
            tls_ca: None,
            reply_keys: None,
        },
        history: None,
        lost_grace: cohort_client::DEFAULT_LOST_GRACE,
    })
    .await
    .unwrap();
    let call = Call {
        agent: AgentName::new("rpcutil").unwrap(),
        action: "ping".into(),
        data: serde_json::Map::new(),
        filter: Filter::default(),
        collective: Collective::new("cohort").unwrap(),
        targets: Targets::Broadcast { expected: BTreeSet::new() },
        timeout: Duration::from_secs(20),
        ttl: 60,
    };
    // As if an earlier discovery had found both: the call ends once both are in.
    let options = DiscoveryOptions {
        expect: Some(2),
        ..DiscoveryOptions::new(Collective::new("cohort").unwrap(), Duration::from_secs(5))
    };
    let at_handover = Mutex::new(Vec::new());
    let (discovered, result) = client
        .discover_and_call(
            &Filter::default(),
            &options,
            call,
            |found| at_handover.lock().unwrap().extend(found.nodes.iter().map(|n| n.to_string())),
            |_| {},
        )
        .await
        .unwrap();
    for task in nodes {
        task.abort();
    }
    // The call went out before `slow` answered discovery...
    assert_eq!(*at_handover.lock().unwrap(), ["fast.example.net"]);
    // ...and `slow` is counted all the same, its early call reply included.
    let names: Vec<String> = discovered.nodes.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["fast.example.net", "slow.example.net"]);
    let stats = &result.stats;
    assert_eq!((stats.discovered, stats.responses, stats.ok), (2, 2, 2), "{stats:?}");
    assert!(stats.no_responses.is_empty(), "{stats:?}");
    assert!(stats.unexpected.is_empty(), "{stats:?}");
    assert!(stats.unverified.is_empty(), "{stats:?}");
}
