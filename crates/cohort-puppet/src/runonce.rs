//! What a `runonce` request asks and the `puppet agent` command line it becomes, with the
//! original agent's rules: `force` means no splay; a server only where the node allows it;
//! tags and environment names checked so nothing reaches Puppet's option parser. Pure.

use serde::Deserialize;

/// The node's `[puppet]` defaults that shape a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDefaults {
    /// Splay runs unless forced.
    pub splay: bool,
    /// Longest splay, in seconds.
    pub splaylimit: u64,
    /// Whether a request may name another server.
    pub allow_server_override: bool,
}

/// A `runonce` request's options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RunRequest {
    /// Run now, without splay.
    pub force: bool,
    /// `Some(true)`: `--noop`; `Some(false)`: `--no-noop`.
    pub noop: Option<bool>,
    /// Only resources with these tags (comma-separated).
    pub tags: Option<String>,
    /// Catalog environment.
    pub environment: Option<String>,
    /// `host[:port]` of another server.
    pub server: Option<String>,
    /// Splay (overrides the node's default unless forced).
    pub splay: Option<bool>,
    /// Longest splay, in seconds.
    pub splaylimit: Option<u64>,
    /// Apply the cached catalog without asking the server.
    pub use_cached_catalog: Option<bool>,
}

/// Why a request cannot become a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// A server was named where that is not allowed.
    #[error("Passing 'server' option is not allowed in module configuration")]
    ServerNotAllowed,
    /// A value that would not be a single safe argument.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// The value.
        value: String,
    },
}

impl RunRequest {
    /// Whether anything beyond `force` was asked (an idling daemon cannot take options).
    pub fn has_options(&self) -> bool {
        self.noop.is_some()
            || self.tags.is_some()
            || self.environment.is_some()
            || self.server.is_some()
            || self.splay.is_some()
            || self.splaylimit.is_some()
            || self.use_cached_catalog.is_some()
    }
}

fn word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn check(what: &'static str, value: &str, ok: bool) -> Result<(), RunError> {
    if ok { Ok(()) } else { Err(RunError::Invalid { what, value: value.to_owned() }) }
}

/// The arguments after `puppet agent`: `--onetime --no-daemonize --color=false --show_diff
/// --verbose` and the request's options.
pub fn agent_args(request: &RunRequest, defaults: &RunDefaults) -> Result<Vec<String>, RunError> {
    let mut args: Vec<String> =
        ["--onetime", "--no-daemonize", "--color=false", "--show_diff", "--verbose"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    if let Some(noop) = request.noop {
        args.push(if noop { "--noop" } else { "--no-noop" }.to_owned());
    }
    if let Some(tags) = &request.tags {
        let ok = !tags.is_empty()
            && tags.split(',').all(|t| {
                !t.is_empty() && t.chars().all(|c| word(c) || c == ':' || c == '.' || c == '-')
            });
        check("tags", tags, ok)?;
        args.push(format!("--tags={tags}"));
    }
    if let Some(environment) = &request.environment {
        let ok = environment.starts_with(|c: char| c.is_ascii_alphabetic())
            && environment.chars().all(word);
        check("environment", environment, ok)?;
        args.push(format!("--environment={environment}"));
    }
    if let Some(server) = &request.server {
        if !defaults.allow_server_override {
            return Err(RunError::ServerNotAllowed);
        }
        let (host, port) = match server.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server.as_str(), None),
        };
        let ok = host.starts_with(|c: char| c.is_ascii_alphanumeric())
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && port.is_none_or(|p| p.parse::<u16>().is_ok());
        check("server", server, ok)?;
        args.push(format!("--server={host}"));
        if let Some(port) = port {
            args.push(format!("--masterport={port}"));
        }
    }
    match request.use_cached_catalog {
        Some(true) => args.push("--use_cached_catalog".into()),
        Some(false) => args.push("--no-use_cached_catalog".into()),
        None => {}
    }
    let splay = !request.force && request.splay.unwrap_or(defaults.splay);
    if splay {
        args.push("--splay".into());
        args.push(format!("--splaylimit={}", request.splaylimit.unwrap_or(defaults.splaylimit)));
    } else if request.force || request.splay == Some(false) {
        args.push("--no-splay".into());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RunDefaults {
        RunDefaults { splay: true, splaylimit: 30, allow_server_override: false }
    }

    #[test]
    fn plain_run_splays_by_default_and_force_does_not() {
        let args = agent_args(&RunRequest::default(), &defaults()).unwrap();
        assert_eq!(
            args,
            [
                "--onetime",
                "--no-daemonize",
                "--color=false",
                "--show_diff",
                "--verbose",
                "--splay",
                "--splaylimit=30"
            ]
        );
        let forced = agent_args(
            &RunRequest { force: true, splaylimit: Some(5), ..RunRequest::default() },
            &defaults(),
        )
        .unwrap();
        assert!(forced.ends_with(&["--no-splay".to_owned()]));
        assert!(!forced.iter().any(|a| a.starts_with("--splaylimit")));
    }

    #[test]
    fn options() {
        let request = RunRequest {
            noop: Some(true),
            tags: Some("apache,ntp::config".into()),
            environment: Some("staging".into()),
            use_cached_catalog: Some(true),
            splay: Some(true),
            splaylimit: Some(10),
            ..RunRequest::default()
        };
        let args = agent_args(&request, &defaults()).unwrap();
        for want in [
            "--noop",
            "--tags=apache,ntp::config",
            "--environment=staging",
            "--use_cached_catalog",
            "--splaylimit=10",
        ] {
            assert!(args.contains(&want.to_owned()), "{want} in {args:?}");
        }
        assert!(request.has_options());
        assert!(!RunRequest { force: true, ..RunRequest::default() }.has_options());
    }

    #[test]
    fn refusals() {
        let server = RunRequest { server: Some("puppet2:8140".into()), ..RunRequest::default() };
        assert_eq!(agent_args(&server, &defaults()).unwrap_err(), RunError::ServerNotAllowed);
        let allowed = RunDefaults { allow_server_override: true, ..defaults() };
        let args = agent_args(&server, &allowed).unwrap();
        assert!(
            args.contains(&"--server=puppet2".to_owned())
                && args.contains(&"--masterport=8140".to_owned())
        );
        for bad in [
            RunRequest { tags: Some("a;rm".into()), ..RunRequest::default() },
            RunRequest { environment: Some("--modulepath=/x".into()), ..RunRequest::default() },
            RunRequest { server: Some("-x".into()), ..RunRequest::default() },
        ] {
            assert!(matches!(agent_args(&bad, &allowed), Err(RunError::Invalid { .. })), "{bad:?}");
        }
    }
}
