//! The pipeline without a bus: request bytes in, decision out.

use super::*;
use crate::agent::CallFuture;
use cohort_ddl::AgentDdl;
use cohort_proto::{Filter, RequestId, RpcBody};

/// An agent whose `echo` action returns its input and whose `hang` action never finishes.
struct Fake {
    ddl: Arc<AgentDdl>,
}

impl Agent for Fake {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            match request.action.as_str() {
                "echo" => Outcome::ok(request.data),
                "hang" => {
                    std::future::pending::<()>().await;
                    Outcome::ok(Map::new())
                }
                _ => Outcome::fail(StatusCode::Aborted, "refused"),
            }
        })
    }
}

fn node() -> NodeState {
    let fake = AgentDdl::from_json(
        r#"{"metadata": {"name": "fake", "description": "", "timeout": 0.2},
            "actions": [
              {"action": "echo", "input": {"msg": {"type": "string", "optional": false, "validation": "^[a-z]+$"}},
               "output": {"msg": {"display_as": "Message"}, "extra": {"display_as": "Extra", "default": "none"}}},
              {"action": "hang"},
              {"action": "refuse"},
              {"action": "missing_impl"}
            ]}"#,
    )
    .unwrap();
    let agents: Vec<Arc<dyn Agent>> = vec![
        Arc::new(crate::rpcutil::Rpcutil::new().unwrap()),
        Arc::new(Fake { ddl: Arc::new(fake) }),
    ];
    let mut facts = Map::new();
    facts.insert("country".into(), "uk".into());
    NodeState::new(
        Identity::new("node1").unwrap(),
        vec![Collective::new("cohort").unwrap(), Collective::new("eu").unwrap()],
        Facts { facts, classes: vec!["role::web".into()] },
        agents,
        None,
        Map::new(),
        Duration::from_secs(30),
    )
}

fn request(agent: &str, action: &str, data: &str, filter: Filter, time: SystemTime) -> Vec<u8> {
    Request {
        protocol: PROTOCOL.into(),
        version: VERSION,
        id: RequestId::from_random([7; 16]),
        sender: "ops".into(),
        caller: "user=test".into(),
        collective: Collective::new("cohort").unwrap(),
        agent: AgentName::new(agent).unwrap(),
        time: now_ms(time),
        ttl: 60,
        filter,
        body: RpcBody {
            action: action.into(),
            data: serde_json::from_str(data).unwrap(),
            process_results: true,
        },
        reply_to: None,
        reply_proof: cohort_proto::ReplyProof::Signature,
    }
    .to_bytes()
}

async fn reply(node: &NodeState, bytes: &[u8]) -> Reply {
    match node.handle(bytes, None, SystemTime::now()).await {
        Handled::Reply(reply, _) => *reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[tokio::test]
async fn every_status_code() {
    let node = node();
    let now = SystemTime::now();
    let ok =
        reply(&node, &request("fake", "echo", r#"{"msg": "hi"}"#, Filter::default(), now)).await;
    assert_eq!(
        (ok.status, ok.data["msg"].as_str(), ok.data["extra"].as_str()),
        (StatusCode::Ok, Some("hi"), Some("none"))
    );
    let aborted = reply(&node, &request("fake", "refuse", "{}", Filter::default(), now)).await;
    assert_eq!(aborted.status, StatusCode::Aborted);
    let unknown = reply(&node, &request("fake", "nope", "{}", Filter::default(), now)).await;
    assert_eq!(
        (unknown.status, unknown.status_message.as_str()),
        (StatusCode::UnknownAction, "Unknown action 'nope' for agent 'fake'")
    );
    let missing = reply(&node, &request("fake", "echo", "{}", Filter::default(), now)).await;
    assert_eq!(missing.status, StatusCode::MissingData);
    let invalid =
        reply(&node, &request("fake", "echo", r#"{"msg": "HI"}"#, Filter::default(), now)).await;
    assert_eq!(invalid.status, StatusCode::InvalidData);
    assert!(invalid.status_message.contains("should match"), "{}", invalid.status_message);
    let hung = reply(&node, &request("fake", "hang", "{}", Filter::default(), now)).await;
    assert_eq!(hung.status, StatusCode::UnknownError);
    assert!(hung.status_message.contains("timed out"));
    let no_agent = reply(&node, &request("nrpe", "runcommand", "{}", Filter::default(), now)).await;
    assert_eq!(no_agent.status, StatusCode::UnknownAction);
}

#[tokio::test]
async fn discovery_filters_and_expiry() {
    let node = node();
    let now = SystemTime::now();
    let pong = reply(&node, &request("discovery", "ping", "{}", Filter::default(), now)).await;
    assert_eq!(pong.data["pong"], true);
    let other_country = Filter {
        fact: vec![cohort_filter::parse_fact("country=fr").unwrap()],
        ..Filter::default()
    };
    assert!(matches!(
        node.handle(&request("discovery", "ping", "{}", other_country, now), None, now).await,
        Handled::Ignored("filtered")
    ));
    let old = now - Duration::from_secs(61);
    assert!(matches!(
        node.handle(&request("rpcutil", "ping", "{}", Filter::default(), old), None, now).await,
        Handled::Ignored("expired")
    ));
    let future = now + Duration::from_secs(120);
    assert!(matches!(
        node.handle(&request("rpcutil", "ping", "{}", Filter::default(), future), None, now).await,
        Handled::Ignored("expired")
    ));
    assert!(matches!(node.handle(b"{not json", None, now).await, Handled::Ignored("undecodable")));
    assert_eq!(Stats::get(&node.stats.total), 5);
    assert_eq!(Stats::get(&node.stats.ttl_expired), 2);
    assert_eq!(Stats::get(&node.stats.filtered), 1);
    assert_eq!(Stats::get(&node.stats.invalid), 1);
}

#[tokio::test]
async fn rpcutil_actions() {
    let node = node();
    let now = SystemTime::now();
    let fact = reply(
        &node,
        &request("rpcutil", "get_fact", r#"{"fact": "country"}"#, Filter::default(), now),
    )
    .await;
    assert_eq!(fact.data["value"], "uk");
    let inventory =
        reply(&node, &request("rpcutil", "inventory", "{}", Filter::default(), now)).await;
    assert_eq!(inventory.data["classes"][0], "role::web");
    assert_eq!(inventory.data["collectives"], serde_json::json!(["cohort", "eu"]));
    let stats =
        reply(&node, &request("rpcutil", "daemon_stats", "{}", Filter::default(), now)).await;
    assert_eq!(stats.data["total"], 3);
    let item = reply(
        &node,
        &request("rpcutil", "get_config_item", r#"{"item": "nope"}"#, Filter::default(), now),
    )
    .await;
    assert_eq!(item.status, StatusCode::Aborted);
}

mod secure {
    use cohort_security::{
        Authorizer, Credential, Groups, KeyKind, Policy, Role, SecretKey, Signer, Trust,
    };

    use super::*;

    fn member(issuer: &SecretKey, name: &str, role: Role, seed: u8) -> Signer {
        let key = SecretKey::generate(KeyKind::Member, [seed; 32]);
        let now = now_ms(SystemTime::now()) / 1000;
        let credential = Credential::issue(
            issuer,
            name,
            role,
            key.public(),
            format!("s{seed}"),
            now - 10,
            now + 3600,
        )
        .unwrap();
        Signer::new(key, credential).unwrap()
    }

    fn secure_node(issuer: &SecretKey) -> NodeState {
        let mut policies = std::collections::HashMap::new();
        let policy =
            Policy::parse("allow\tclient=alice\techo\t*\t*\n", &Groups::default()).unwrap();
        policies.insert("fake".to_owned(), policy);
        let security = crate::security::NodeSecurity::new(
            Trust::new(vec![issuer.public().clone()]),
            member(issuer, "node1", Role::Node, 50),
            Authorizer::new(policies, Default::default(), None),
            100,
        );
        node().with_security(Arc::new(security)).with_metrics()
    }

    /// A `fake` request from `caller` with an id made of `id`, created at `time`.
    fn from_caller(caller: &str, action: &str, id: u8, time: SystemTime) -> Request {
        let mut request: Request = serde_json::from_slice(&request(
            "fake",
            action,
            r#"{"msg": "hi"}"#,
            Filter::default(),
            time,
        ))
        .unwrap();
        request.caller = caller.to_owned();
        request.id = RequestId::from_random([id; 16]);
        request
    }

    fn signed(signer: &Signer, caller: &str, action: &str, id: u8) -> Vec<u8> {
        let request = from_caller(caller, action, id, SystemTime::now());
        signer.seal(&String::from_utf8(request.to_bytes()).unwrap())
    }

    #[tokio::test]
    async fn replies_go_only_where_signed_and_nothing_from_before_the_start_runs() {
        let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let node = secure_node(&issuer);
        let alice = member(&issuer, "alice", Role::Client, 2);
        let now = SystemTime::now();
        let own = |id: u8| {
            cohort_proto::reply_subject(
                &Collective::new("cohort").unwrap(),
                "client=alice",
                &RequestId::from_random([id; 16]),
            )
        };

        // Alice's own reply subject, derived from what she signed: served.
        let bytes = signed(&alice, "client=alice", "echo", 11);
        assert!(matches!(node.handle(&bytes, Some(&own(11)), now).await, Handled::Reply(..)));
        // The same bytes republished with a thief's reply subject: refused, nothing runs.
        let bytes = signed(&alice, "client=alice", "echo", 12);
        let stolen = format!("cohort.reply.{}.x", cohort_proto::caller_hash("client=mallory"));
        assert!(matches!(
            node.handle(&bytes, Some(&stolen), now).await,
            Handled::Ignored("replayed")
        ));
        // Refused before the replay cache: the genuine message still runs after the theft.
        assert!(matches!(node.handle(&bytes, Some(&own(12)), now).await, Handled::Reply(..)));
        // A reply subject of her choice is served only when she signed it.
        let mut request = from_caller("client=alice", "echo", 13, now);
        request.reply_to = Some("elsewhere.inbox".to_owned());
        let chosen = alice.seal(&String::from_utf8(request.to_bytes()).unwrap());
        assert!(matches!(node.handle(&chosen, Some(&own(13)), now).await, Handled::Ignored(_)));
        assert!(matches!(
            node.handle(&chosen, Some("elsewhere.inbox"), now).await,
            Handled::Reply(..)
        ));

        // Created before the daemon started: its replay cache may not have it.
        let mut old: Request =
            serde_json::from_slice(&request_at(now - Duration::from_secs(5))).unwrap();
        old.caller = "client=alice".to_owned();
        let old = alice.seal(&String::from_utf8(old.to_bytes()).unwrap());
        assert!(matches!(node.handle(&old, None, now).await, Handled::Ignored("replayed")));
        assert_eq!(node.stats.replayed.load(std::sync::atomic::Ordering::Relaxed), 3);
        let metrics = node.metrics_text();
        assert!(
            metrics.contains("cohort_daemon_refusals_total{reason=\"replayed\"} 3"),
            "{metrics}"
        );
        assert!(metrics.contains("cohort_daemon_replay_cache_capacity 100"), "{metrics}");
        let served = "cohort_daemon_requests_total{agent=\"fake\",action=\"echo\",status=\"0\"} 3";
        assert!(metrics.contains(served), "{metrics}");
    }

    #[tokio::test]
    async fn a_caller_that_asks_gets_a_reply_only_it_can_check() {
        let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let node = secure_node(&issuer);
        let alice = member(&issuer, "alice", Role::Client, 2);
        let trust = Trust::new(vec![issuer.public().clone()]);
        let now = SystemTime::now();
        let ask = |proof: cohort_proto::ReplyProof, id: u8| {
            let mut request = from_caller("client=alice", "echo", id, now);
            request.reply_proof = proof;
            alice.seal(&String::from_utf8(request.to_bytes()).unwrap())
        };
        let at_alice = cohort_security::ReplyKeys::new(alice.key());
        let open = |bytes: &[u8]| {
            let unsealed = vec![cohort_security::unseal(bytes)];
            cohort_security::open_unsealed(unsealed, &trust, now_ms(now) / 1000, Some(&at_alice))
                .remove(0)
        };
        let Handled::Reply(reply, Some(key)) =
            node.handle(&ask(ReplyProof::Mac, 1), None, now).await
        else {
            panic!("a MAC'd reply was asked for");
        };
        let out = node.reply_bytes(&reply, Some(&key));
        let head: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(head.get("mac").is_some() && head.get("signature").is_none());
        assert_eq!(open(&out).unwrap().signer.caller, "node=node1");
        // Nobody else can check it: it is not a signature.
        assert!(cohort_security::open(&out, &trust, now_ms(now) / 1000).is_err());
        // Asked for nothing: signed, as before.
        let Handled::Reply(reply, None) =
            node.handle(&ask(ReplyProof::Signature, 2), None, now).await
        else {
            panic!("a signed reply was asked for");
        };
        let out = node.reply_bytes(&reply, None);
        assert!(cohort_security::open(&out, &trust, now_ms(now) / 1000).is_ok());
    }

    fn request_at(time: SystemTime) -> Vec<u8> {
        request("fake", "echo", r#"{"msg": "hi"}"#, Filter::default(), time)
    }

    #[tokio::test]
    async fn verify_replay_authorize_and_sign() {
        let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let node = secure_node(&issuer);
        let alice = member(&issuer, "alice", Role::Client, 2);
        let bob = member(&issuer, "bob", Role::Client, 3);
        let now = SystemTime::now();

        let bytes = signed(&alice, "client=alice", "echo", 1);
        let ok = reply(&node, &bytes).await;
        assert_eq!(ok.status, StatusCode::Ok);
        // The reply goes out signed by the node.
        let out = node.reply_bytes(&ok, None);
        let trust = Trust::new(vec![issuer.public().clone()]);
        let opened = cohort_security::open(&out, &trust, now_ms(now) / 1000).unwrap();
        assert_eq!(opened.signer.caller, "node=node1");

        assert!(matches!(node.handle(&bytes, None, now).await, Handled::Ignored("replayed")));
        let unsigned = request("fake", "echo", r#"{"msg": "hi"}"#, Filter::default(), now);
        assert!(matches!(node.handle(&unsigned, None, now).await, Handled::Ignored("unsigned")));
        let impostor = signed(&alice, "client=bob", "echo", 2);
        assert!(matches!(node.handle(&impostor, None, now).await, Handled::Ignored("unverified")));
        let from_node = signed(&member(&issuer, "n2", Role::Node, 4), "node=n2", "echo", 3);
        assert!(matches!(node.handle(&from_node, None, now).await, Handled::Ignored("unverified")));

        let denied = reply(&node, &signed(&bob, "client=bob", "echo", 4)).await;
        assert_eq!(denied.status, StatusCode::Aborted);
        assert!(denied.status_message.contains("not authorized"));
        // rpcutil is a read-only built-in: allowed without a policy.
        let mut ping: Request =
            serde_json::from_slice(&request("rpcutil", "ping", "{}", Filter::default(), now))
                .unwrap();
        ping.caller = "client=bob".into();
        ping.id = RequestId::from_random([5; 16]);
        let pong = reply(&node, &bob.seal(&String::from_utf8(ping.to_bytes()).unwrap())).await;
        assert_eq!(pong.status, StatusCode::Ok);

        let stats = &node.stats;
        assert_eq!(Stats::get(&stats.replayed), 1);
        assert_eq!(Stats::get(&stats.unverified), 3);
        assert_eq!(Stats::get(&stats.unauthorized), 1);
    }

    /// A request for other nodes is dropped before its signature is checked (only the nodes a
    /// request is for pay for that), whoever sent it; one for this node is checked whatever
    /// its filter, so a forgery cannot pass by the filter.
    #[tokio::test]
    async fn the_filter_decides_before_the_signature_is_checked() {
        let issuer = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let node = secure_node(&issuer);
        let alice = member(&issuer, "alice", Role::Client, 2);
        let now = SystemTime::now();
        let with_filter = |filter: Filter, id: u8, tamper: bool| {
            let mut request: Request = serde_json::from_slice(&request(
                "fake",
                "echo",
                r#"{"msg": "hi"}"#,
                filter,
                SystemTime::now(),
            ))
            .unwrap();
            request.caller = "client=alice".into();
            request.id = RequestId::from_random([id; 16]);
            let sealed = alice.seal(&String::from_utf8(request.to_bytes()).unwrap());
            if !tamper {
                return sealed;
            }
            // Altered after signing: the signature no longer covers the message.
            String::from_utf8(sealed).unwrap().replace("hi", "ho").into_bytes()
        };
        let elsewhere = Filter {
            fact: vec![cohort_filter::parse_fact("country=fr").unwrap()],
            ..Filter::default()
        };
        let here = Filter {
            fact: vec![cohort_filter::parse_fact("country=uk").unwrap()],
            ..Filter::default()
        };
        let forged_elsewhere = with_filter(elsewhere.clone(), 10, true);
        assert!(matches!(
            node.handle(&forged_elsewhere, None, now).await,
            Handled::Ignored("filtered")
        ));
        assert_eq!(Stats::get(&node.stats.unverified), 0);
        let forged_here = with_filter(here.clone(), 11, true);
        assert!(matches!(
            node.handle(&forged_here, None, now).await,
            Handled::Ignored("unverified")
        ));
        assert_eq!(Stats::get(&node.stats.unverified), 1);
        assert_eq!(reply(&node, &with_filter(here, 12, false)).await.status, StatusCode::Ok);
        let genuine_elsewhere = with_filter(elsewhere, 13, false);
        assert!(matches!(
            node.handle(&genuine_elsewhere, None, now).await,
            Handled::Ignored("filtered")
        ));
        assert_eq!(Stats::get(&node.stats.filtered), 2);
        assert_eq!(Stats::get(&node.stats.passed), 1);
    }
}
