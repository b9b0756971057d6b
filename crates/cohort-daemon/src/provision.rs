//! The provisioning agents over `cohort-provision`: `provision` on new nodes (the lease, the
//! hosts file, the certificate, the Puppet runs, `disable`, after which it deactivates),
//! `puppetca` on masters (`puppetserver ca`), and `notify`, the built-in notifier (`sendmsg`
//! through the same senders the provisioner uses directly).

use std::sync::Arc;
use std::time::Duration;

use cohort_ddl::AgentDdl;
use cohort_proto::StatusCode;
use cohort_provision::node::{NodeSettings, ProvisionNode, PuppetCommand, Refused};
use cohort_provision::notify::{Message, Recipient, Senders, SmtpConfig, XmppConfig};
use cohort_provision::puppetca::{CaSettings, PuppetCa};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::agent::{ActionRequest, Agent, CallFuture, Context, Outcome};

/// `[notify]` in `daemon.toml`: the built-in notifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierSettings {
    /// Whether this node offers the `notify` agent.
    pub enabled: bool,
    /// Outgoing mail.
    pub smtp: SmtpConfig,
    /// XMPP account.
    pub xmpp: XmppConfig,
}

fn unix_ms() -> i64 {
    cohort_puppet::host::unix_now().saturating_mul(1000)
}

fn text<'a>(request: &'a ActionRequest, key: &str) -> &'a str {
    request.data.get(key).and_then(Value::as_str).unwrap_or("")
}

fn refused(err: Refused) -> Outcome {
    Outcome { status: StatusCode::Aborted, message: err.message, data: err.data }
}

fn answer(result: Result<Map<String, Value>, Refused>) -> Outcome {
    result.map_or_else(refused, Outcome::ok)
}

fn aborted(message: String) -> Outcome {
    Outcome::fail(StatusCode::Aborted, message)
}

fn unknown(agent: &str, action: &str) -> Outcome {
    Outcome::fail(
        StatusCode::UnknownAction,
        format!("Unknown action '{action}' for agent '{agent}'"),
    )
}

/// The `provision` agent.
#[derive(Debug)]
pub struct Provision {
    ddl: Arc<AgentDdl>,
    node: ProvisionNode,
}

impl Provision {
    /// The agent, when `[provision] enabled`.
    pub fn new(settings: &NodeSettings, puppet: &cohort_puppet::PuppetConfig) -> Option<Provision> {
        if !settings.enabled {
            return None;
        }
        let command = PuppetCommand {
            command: puppet.command.clone(),
            extra_args: puppet.extra_args.clone(),
        };
        Some(Provision {
            ddl: cohort_ddl::builtin::find("provision")?,
            node: ProvisionNode::new(settings.clone(), command),
        })
    }
}

impl Agent for Provision {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn active(&self) -> bool {
        !cohort_provision::node::is_disabled(self.node.settings())
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            let now = unix_ms();
            // Puppet runs may take the whole action timeout, less a margin to reply.
            let budget =
                request.timeout.saturating_sub(Duration::from_secs(5)).max(Duration::from_secs(1));
            match request.action.as_str() {
                "lock" => {
                    let ttl = request.data.get("ttl").and_then(Value::as_u64).unwrap_or(0);
                    answer(self.node.lock(text(&request, "owner"), Duration::from_secs(ttl), now))
                }
                "unlock" => answer(self.node.unlock(text(&request, "owner"), now)),
                "status" => Outcome::ok(self.node.status(now).await),
                "set_puppet_host" => answer(self.node.set_puppet_host(text(&request, "ipaddress"))),
                "has_cert" => match self.node.has_cert().await {
                    Ok(has) => Outcome::ok(
                        [("has_cert".to_owned(), Value::Bool(has))].into_iter().collect(),
                    ),
                    Err(err) => refused(err),
                },
                "request_certificate" => answer(self.node.request_certificate(budget).await),
                "bootstrap_puppet" => {
                    let environment = Some(text(&request, "environment"))
                        .filter(|e| !e.is_empty())
                        .unwrap_or("bootstrap");
                    answer(self.node.run_puppet(Some(environment), budget).await)
                }
                "run_puppet" => answer(self.node.run_puppet(None, budget).await),
                "daemonize_puppet" => answer(self.node.daemonize_puppet(budget).await),
                "disable" => answer(self.node.disable(now)),
                other => unknown("provision", other),
            }
        })
    }
}

/// The `puppetca` agent.
#[derive(Debug)]
pub struct Puppetca {
    ddl: Arc<AgentDdl>,
    ca: PuppetCa,
}

impl Puppetca {
    /// The agent, when `[puppetca] enabled`.
    pub fn new(settings: &CaSettings) -> Option<Puppetca> {
        if !settings.enabled {
            return None;
        }
        Some(Puppetca {
            ddl: cohort_ddl::builtin::find("puppetca")?,
            ca: PuppetCa::new(settings.clone()),
        })
    }
}

impl Agent for Puppetca {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            let certname = text(&request, "certname");
            let result = match request.action.as_str() {
                "list" => self.ca.list().await.map(|listing| {
                    cohort_provision::node::object(
                        serde_json::to_value(listing).unwrap_or_default(),
                    )
                }),
                "status" => self.ca.status(certname).await,
                "sign" => self.ca.sign(certname).await,
                "clean" => self.ca.clean(certname).await,
                "revoke" => self.ca.revoke(certname).await,
                other => return unknown("puppetca", other),
            };
            result.map_or_else(aborted, Outcome::ok)
        })
    }
}

/// The built-in `notify` agent.
#[derive(Debug)]
pub struct Notifier {
    ddl: Arc<AgentDdl>,
    senders: Senders,
}

impl Notifier {
    /// The agent, when `[notify] enabled`.
    pub fn new(settings: &NotifierSettings) -> Option<Notifier> {
        if !settings.enabled {
            return None;
        }
        Some(Notifier {
            ddl: cohort_ddl::builtin::find("notify")?,
            senders: Senders::new(settings.smtp.clone(), settings.xmpp.clone()),
        })
    }
}

impl Agent for Notifier {
    fn ddl(&self) -> &Arc<AgentDdl> {
        &self.ddl
    }

    fn call<'a>(&'a self, _ctx: &'a Context, request: ActionRequest) -> CallFuture<'a> {
        Box::pin(async move {
            if request.action != "sendmsg" {
                return unknown("notify", &request.action);
            }
            let recipient = match Recipient::parse(text(&request, "recipient")) {
                Ok(recipient) => recipient,
                Err(err) => return Outcome::fail(StatusCode::InvalidData, err.to_string()),
            };
            let message = Message {
                subject: text(&request, "subject").to_owned(),
                message: text(&request, "message").to_owned(),
            };
            match self.senders.send(&recipient, &message).await {
                Ok(status) => Outcome::ok(
                    [("status".to_owned(), Value::String(status))].into_iter().collect(),
                ),
                Err(err) => aborted(err),
            }
        })
    }
}
