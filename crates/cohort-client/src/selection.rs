//! Where a call goes and how: discovered with a filter or taken from a list, limited to some
//! of the nodes, sent in batches. One path for every command that calls an agent (`rpc`,
//! `nrpe`, `nagios`, the inventory applications, and the tools to come), with one rule for the
//! default reply timeout.

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_proto::{AgentName, Filter, Identity, RequestId};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::{
    Call, CallResult, Client, ClientError, Discovered, DiscoveryOptions, NodeReply, Targets,
};

/// Where a call goes.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Discover the nodes matching the filter, then broadcast the call with it. Literal
    /// identities alone (`-I name`) skip discovery and go to each node's own subject.
    Discover(Filter, DiscoveryOptions),
    /// A fixed set of nodes (a node list, an inventory): each is sent the call directly.
    Listed(BTreeSet<Identity>),
}

impl Selection {
    /// Only nodes that have `agent` are discovered (MCollective adds `-A AGENT` itself): a node
    /// without the agent is not expected, so it is never reported as not responding. Literal
    /// identities and listed nodes are taken as they are.
    pub fn for_agent(self, agent: &AgentName) -> Selection {
        match self {
            Selection::Discover(mut filter, options) => {
                if crate::literal_identities(&filter).is_none()
                    && !filter.agent.iter().any(|a| a == agent.as_str())
                {
                    filter.agent.push(agent.as_str().to_owned());
                }
                Selection::Discover(filter, options)
            }
            listed => listed,
        }
    }

    /// The discovery filter; `None` for a list.
    pub fn filter(&self) -> Option<&Filter> {
        match self {
            Selection::Discover(filter, _) => Some(filter),
            Selection::Listed(_) => None,
        }
    }
}

/// A number of nodes, absolute or a percentage of those selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many.
    Nodes(usize),
    /// This percentage, rounded up, at least one.
    Percent(u8),
}

impl Count {
    /// How many of `total` this is.
    pub fn of(self, total: usize) -> usize {
        match self {
            Count::Nodes(n) => n,
            Count::Percent(p) => (total * usize::from(p)).div_ceil(100).max(1),
        }
    }
}

impl std::str::FromStr for Count {
    type Err = String;

    /// `N` or `N%` (1 to 100).
    fn from_str(text: &str) -> Result<Count, String> {
        let bad =
            || format!("{text:?} is not a positive number of nodes or a percentage (N or N%)");
        match text.strip_suffix('%') {
            Some(percent) => match percent.parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Count::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Count::Nodes(n)),
                _ => Err(bad()),
            },
        }
    }
}

/// How --limit-nodes picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The first, in identity order.
    First,
    /// A random choice; the same seed picks the same nodes.
    Random(Option<u64>),
}

/// How a call is spread over the selected nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    /// Act on only this many of the selected nodes.
    pub limit: Option<(Count, Pick)>,
    /// Send to this many at a time, each batch waiting for its replies.
    pub batch: Option<Count>,
    /// Pause between batches.
    pub batch_sleep: Duration,
}

impl Spread {
    /// Whether the nodes must be known before anything is sent (a limit or batches).
    pub fn shapes(&self) -> bool {
        self.limit.is_some() || self.batch.is_some()
    }

    /// The nodes a limit keeps.
    pub fn limit(&self, nodes: BTreeSet<Identity>) -> BTreeSet<Identity> {
        let Some((count, pick)) = self.limit else { return nodes };
        let keep = count.of(nodes.len());
        if keep >= nodes.len() {
            return nodes;
        }
        match pick {
            Pick::First => nodes.into_iter().take(keep).collect(),
            Pick::Random(seed) => {
                let mut rng = match seed {
                    Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
                    None => rand::rngs::StdRng::from_entropy(),
                };
                let mut all: Vec<Identity> = nodes.into_iter().collect();
                all.shuffle(&mut rng);
                all.into_iter().take(keep).collect()
            }
        }
    }
}

/// The reply timeout when none is given: the action's DDL timeout (10 s without a DDL) plus
/// the discovery timeout, as MCollective computes it.
pub fn reply_timeout(
    given: Option<Duration>,
    ddl_timeout: Option<Duration>,
    discovery: Duration,
) -> Duration {
    given.unwrap_or_else(|| ddl_timeout.unwrap_or(Duration::from_secs(10)) + discovery)
}

impl Client {
    /// Runs `call` on the nodes `selection` names, spread as `spread` says. `on_discovered`
    /// sees the nodes before anything is sent (after any limit); `on_reply` each counted
    /// reply as it arrives. `call.targets` is set here, and `call.filter` to the discovery
    /// filter when there is one (a list keeps the filter the caller gave).
    pub async fn run(
        &self,
        selection: Selection,
        spread: Spread,
        mut call: Call,
        on_discovered: impl FnOnce(&Discovered),
        mut on_reply: impl FnMut(&NodeReply),
    ) -> Result<(Discovered, CallResult), ClientError> {
        if let Some(filter) = selection.filter() {
            call.filter = filter.clone();
        }
        let discovered = match selection {
            Selection::Discover(filter, options) if !spread.shapes() => {
                return self
                    .discover_and_call(&filter, &options, call, on_discovered, on_reply)
                    .await;
            }
            selection => self.limited(selection, spread).await?,
        };
        on_discovered(&discovered);
        let nodes: Vec<Identity> = discovered.nodes.iter().cloned().collect();
        if nodes.is_empty() {
            return Ok((discovered, CallResult::empty()));
        }
        let size = spread.batch.map_or(nodes.len(), |batch| batch.of(nodes.len())).max(1);
        let mut result = CallResult::empty();
        for (index, batch) in nodes.chunks(size).enumerate() {
            if index > 0 {
                tokio::time::sleep(spread.batch_sleep).await;
            }
            call.targets = Targets::Direct(batch.iter().cloned().collect());
            let part = self.call(call.clone(), &mut on_reply).await?;
            if index == 0 {
                result = part;
            } else {
                result.absorb(part);
            }
        }
        Ok((discovered, result))
    }

    /// Sends `call` to the nodes `selection` names without waiting for replies ([`Client::send`]:
    /// to `reply_to`, or no replies at all). Discovery is one broadcast carrying the filter,
    /// unless a limit needs the nodes first; a list goes to each node directly. Returns the
    /// request id and the discovery made, if one was.
    pub async fn send_selected(
        &self,
        selection: Selection,
        spread: Spread,
        mut call: Call,
        reply_to: Option<&str>,
    ) -> Result<(RequestId, Option<Discovered>), ClientError> {
        if let Some(filter) = selection.filter() {
            call.filter = filter.clone();
        }
        let mut discovered = None;
        call.targets = match selection {
            // A broadcast nobody waits for: every node that has the agent and matches acts.
            Selection::Discover(..) if spread.limit.is_none() => {
                Targets::Broadcast { expected: BTreeSet::new() }
            }
            selection => {
                let found = self.limited(selection, spread).await?;
                let nodes = found.nodes.clone();
                discovered = found.networked.then_some(found);
                Targets::Direct(nodes)
            }
        };
        let id = self.send(&call, reply_to).await?;
        Ok((id, discovered))
    }

    /// The nodes `selection` names, discovered or listed, with `spread`'s limit applied.
    async fn limited(
        &self,
        selection: Selection,
        spread: Spread,
    ) -> Result<Discovered, ClientError> {
        let mut discovered = match selection {
            Selection::Discover(filter, options) => {
                self.discover(&filter, &options, |_, _| {}).await?
            }
            Selection::Listed(nodes) => Discovered::listed(nodes, Duration::ZERO),
        };
        discovered.nodes = spread.limit(std::mem::take(&mut discovered.nodes));
        Ok(discovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> BTreeSet<Identity> {
        (0..n).map(|i| Identity::new(format!("n{i:02}")).unwrap()).collect()
    }

    #[test]
    fn counts_parse_and_apply() {
        assert_eq!("3".parse::<Count>(), Ok(Count::Nodes(3)));
        assert_eq!("10%".parse::<Count>(), Ok(Count::Percent(10)));
        assert!("0".parse::<Count>().is_err());
        assert!("101%".parse::<Count>().is_err());
        assert!("x".parse::<Count>().unwrap_err().contains("\"x\""));
        assert_eq!(Count::Percent(10).of(15), 2);
        assert_eq!(Count::Percent(1).of(3), 1);
    }

    #[test]
    fn limits_pick_first_or_repeatably_at_random() {
        let first = Spread { limit: Some((Count::Nodes(2), Pick::First)), ..Spread::default() };
        let kept: Vec<String> = first.limit(names(5)).iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["n00", "n01"]);
        let seeded =
            Spread { limit: Some((Count::Nodes(3), Pick::Random(Some(7)))), ..Spread::default() };
        assert_eq!(seeded.limit(names(20)), seeded.limit(names(20)));
        assert_eq!(seeded.limit(names(20)).len(), 3);
        assert_eq!(Spread::default().limit(names(4)).len(), 4);
    }

    #[test]
    fn the_agent_joins_discovery_but_not_literal_names() {
        let agent = AgentName::new("nrpe").unwrap();
        let options = DiscoveryOptions::new(
            cohort_proto::Collective::new("c").unwrap(),
            Duration::from_secs(2),
        );
        let mut filter = Filter::default();
        filter.fact.push(cohort_proto::FactFilter {
            fact: "a".into(),
            op: cohort_proto::FactOp::Eq,
            value: "1".into(),
        });
        let selected = Selection::Discover(filter, options.clone()).for_agent(&agent);
        assert_eq!(selected.filter().map(|f| f.agent.clone()), Some(vec!["nrpe".to_owned()]));
        // Added once.
        let again = selected.for_agent(&agent);
        assert_eq!(again.filter().map(|f| f.agent.len()), Some(1));
        let mut literal = Filter::default();
        literal.identity.push("web1".into());
        let literal = Selection::Discover(literal, options).for_agent(&agent);
        assert!(literal.filter().is_some_and(|f| f.agent.is_empty()));
        let listed = Selection::Listed(names(2)).for_agent(&agent);
        assert!(listed.filter().is_none());
    }

    #[test]
    fn the_default_timeout_is_the_ddls_plus_discovery() {
        let s = Duration::from_secs;
        assert_eq!(reply_timeout(None, Some(s(70)), s(2)), s(72));
        assert_eq!(reply_timeout(None, None, s(2)), s(12));
        assert_eq!(reply_timeout(Some(s(5)), Some(s(70)), s(2)), s(5));
    }
}
