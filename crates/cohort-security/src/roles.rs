//! Broker permissions by role: what each credential's nkey may publish and subscribe to.
//!
//! Nodes may hear broadcasts and their own node subject and may send only replies and
//! registrations, so a compromised node can neither issue requests nor read other traffic's
//! replies. Clients may send requests and hear only the replies under their own caller hash,
//! and share the Puppet scheduler's lease subject (`*.scheduler.>`).
//! Provisioners are clients that also hear registrations. The same grants configure our
//! broker and the generated nats-server configuration.

use cohort_proto::caller_hash;

use crate::credential::Role;

/// Subjects one connection may use (allow lists; nothing else is permitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrants {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The grants for the holder named `name` in `role`, in any collective.
pub fn grants(role: Role, name: &str) -> RoleGrants {
    let requests = vec!["*.broadcast.agent.>".to_owned(), "*.node.>".to_owned()];
    let own_replies = format!("*.reply.{}.>", caller_hash(&format!("{role}={name}")));
    match role {
        Role::Node => RoleGrants {
            publish: vec!["*.reply.>".to_owned(), "*.registration".to_owned()],
            subscribe: vec!["*.broadcast.agent.>".to_owned(), format!("*.node.{name}")],
        },
        // Schedulers are clients; they share a lease on `<collective>.scheduler.<name>`.
        Role::Client => RoleGrants {
            publish: [requests, vec!["*.scheduler.>".to_owned()]].concat(),
            subscribe: vec![own_replies, "*.scheduler.>".to_owned()],
        },
        Role::Provisioner => RoleGrants {
            publish: requests,
            subscribe: vec![own_replies, "*.registration".to_owned()],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_client_grants() {
        let node = grants(Role::Node, "web1.example.com");
        assert!(node.subscribe.contains(&"*.node.web1.example.com".to_owned()));
        assert!(!node.publish.iter().any(|s| s.contains("broadcast") || s.contains("node")));
        let client = grants(Role::Client, "alice");
        assert_eq!(
            client.subscribe,
            [format!("*.reply.{}.>", caller_hash("client=alice")), "*.scheduler.>".to_owned()]
        );
        let prov = grants(Role::Provisioner, "prov");
        assert!(prov.subscribe.contains(&"*.registration".to_owned()));
    }
}
