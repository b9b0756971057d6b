//! DDLs of the agents compiled into Cohort, embedded so clients and nodes share one copy.

use std::sync::{Arc, OnceLock};

use crate::AgentDdl;

/// `rpcutil`: general information about a node and its daemon.
pub const RPCUTIL: &str = include_str!("../ddl/rpcutil.json");

/// `nrpe`: Nagios checks defined by the node's NRPE configuration.
pub const NRPE: &str = include_str!("../ddl/nrpe.json");

/// `resource`: Puppet-style resources applied natively.
pub const RESOURCE: &str = include_str!("../ddl/resource.json");

/// `puppetral`: the original agent's name and `do` action, served by the resource agent.
pub const PUPPETRAL: &str = include_str!("../ddl/puppetral.json");

/// `puppet`: Puppet run management.
pub const PUPPET: &str = include_str!("../ddl/puppet.json");

/// `provision`: the node side of provisioning.
pub const PROVISION: &str = include_str!("../ddl/provision.json");

/// `puppetca`: Puppet's CA on a master.
pub const PUPPETCA: &str = include_str!("../ddl/puppetca.json");

/// `notify`: the notifier contract (`sendmsg`), also served by the built-in notifier.
pub const NOTIFY: &str = include_str!("../ddl/notify.json");

/// The text of every built-in DDL.
pub const ALL: &[&str] = &[RPCUTIL, NRPE, RESOURCE, PUPPETRAL, PUPPET, PROVISION, PUPPETCA, NOTIFY];

/// Every built-in DDL, parsed once per process (a fleet simulator creates thousands of nodes,
/// and parsing checks every validation regex). Each is checked by a test, so parsing cannot
/// fail at run time.
pub fn all() -> &'static [Arc<AgentDdl>] {
    static PARSED: OnceLock<Vec<Arc<AgentDdl>>> = OnceLock::new();
    PARSED.get_or_init(|| {
        ALL.iter().filter_map(|text| AgentDdl::from_json(text).ok()).map(Arc::new).collect()
    })
}

/// The built-in DDL of `agent`, if there is one.
pub fn find(agent: &str) -> Option<Arc<AgentDdl>> {
    all().iter().find(|ddl| ddl.metadata.name == agent).cloned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_ddls_parse() {
        for text in super::ALL {
            crate::AgentDdl::from_json(text).unwrap();
        }
        assert!(super::find("rpcutil").is_some());
    }
}
