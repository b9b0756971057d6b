//! What the client learns about its broker connection while it works. async-nats reports a
//! lost connection, a refused login and a refused publication or subscription only as events,
//! and a call that ignored them would wait out its timeout and report silence: the events are
//! kept here, and a call in progress is woken by each one to end with the reason.

use std::sync::Arc;

use async_nats::{Event, ServerError};
use tokio::sync::watch;

/// The connection's history, as far as a call needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkState {
    /// Times the connection was lost.
    pub(crate) losses: u64,
    /// Whether it is down now.
    pub(crate) down: bool,
    /// The broker's permission violations, newest last (the last few only).
    pub(crate) violations: Vec<String>,
    /// How many permission violations there were in all.
    pub(crate) violation_count: u64,
    /// Why the broker last refused or ended the login (`Authorization Violation`, `User
    /// Authentication Expired`), if it did.
    pub(crate) refused: Option<String>,
    /// How many times it did.
    pub(crate) refusals: u64,
}

/// Permission violations kept for matching against a call's subjects.
const KEPT_VIOLATIONS: usize = 16;

/// The event sink async-nats calls, and the state calls watch.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    state: Arc<watch::Sender<LinkState>>,
}

impl Link {
    pub(crate) fn new() -> Link {
        Link { state: Arc::new(watch::Sender::new(LinkState::default())) }
    }

    /// Records one event from async-nats.
    pub(crate) fn record(&self, event: &Event) {
        self.state.send_if_modified(|state| apply(state, event));
    }

    /// A receiver that wakes on every change.
    pub(crate) fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// The state now.
    pub(crate) fn now(&self) -> LinkState {
        self.state.borrow().clone()
    }
}

/// Applies `event` to `state`; true when something changed.
fn apply(state: &mut LinkState, event: &Event) -> bool {
    match event {
        Event::Disconnected => {
            state.losses += 1;
            state.down = true;
        }
        Event::Connected => {
            state.down = false;
        }
        Event::ServerError(ServerError::AuthorizationViolation) => {
            state.refused = Some("Authorization Violation".to_owned());
            state.refusals += 1;
        }
        Event::ServerError(ServerError::Other(text)) if text.contains("Authentication Expired") => {
            state.refused = Some(text.clone());
            state.refusals += 1;
        }
        Event::ServerError(ServerError::Other(text)) if text.contains("Permissions Violation") => {
            if state.violations.len() == KEPT_VIOLATIONS {
                state.violations.remove(0);
            }
            state.violations.push(text.clone());
            state.violation_count += 1;
        }
        _ => return false,
    }
    true
}

/// What the link's state `now` means to a call that began at `start` and uses `subjects`:
/// the call's error when the broker refused it or its login, `Ok(true)` when the connection
/// was lost (the call goes on, shortened), `Ok(false)` when nothing concerns it.
pub(crate) fn check(
    start: &LinkState,
    now: &LinkState,
    subjects: &[impl AsRef<str>],
    brokers: &[String],
) -> Result<bool, crate::ClientError> {
    match trouble(start, now, subjects) {
        Some(Trouble::Denied(why)) => Err(crate::ClientError::Denied(why)),
        Some(Trouble::Refused(reason)) => {
            Err(crate::ClientError::Refused { brokers: brokers.join(", "), reason })
        }
        Some(Trouble::Lost) => Ok(true),
        None => Ok(false),
    }
}

/// What a call concludes from how the link changed since it began (`start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trouble {
    /// The broker refused one of the call's own subjects.
    Denied(String),
    /// The broker refused or ended the login.
    Refused(String),
    /// The connection was lost (and may be back).
    Lost,
}

/// The trouble the call whose subjects are `subjects` is in, if any.
pub(crate) fn trouble(
    start: &LinkState,
    now: &LinkState,
    subjects: &[impl AsRef<str>],
) -> Option<Trouble> {
    let new = usize::try_from(now.violation_count - start.violation_count).unwrap_or(usize::MAX);
    let ours = now.violations.iter().rev().take(new).find(|text| {
        subjects.iter().any(|subject| text.contains(&format!("\"{}\"", subject.as_ref())))
    });
    if let Some(text) = ours {
        return Some(Trouble::Denied(text.clone()));
    }
    if let Some(why) = now.refused.as_ref().filter(|_| now.refusals > start.refusals) {
        return Some(Trouble::Refused(why.clone()));
    }
    (now.losses > start.losses || now.down).then_some(Trouble::Lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call with no subjects of its own.
    const NONE: [&str; 0] = [];

    #[test]
    fn a_call_sees_only_what_happened_since_it_began() {
        let mut state = LinkState::default();
        let start = state.clone();
        assert_eq!(trouble(&start, &state, &["c.broadcast.agent.x"]), None);
        // Another call's subject refused: not this call's business.
        let other = ServerError::Other("Permissions Violation for Publish to \"c.node.y\"".into());
        assert!(apply(&mut state, &Event::ServerError(other)));
        assert_eq!(trouble(&start, &state, &["c.broadcast.agent.x"]), None);
        let ours = ServerError::Other(
            "Permissions Violation for Publish to \"c.broadcast.agent.x\"".into(),
        );
        apply(&mut state, &Event::ServerError(ours));
        assert!(matches!(
            trouble(&start, &state, &["c.broadcast.agent.x"]),
            Some(Trouble::Denied(text)) if text.contains("agent.x")
        ));
        // A later call does not inherit an earlier call's violation.
        assert_eq!(trouble(&state.clone(), &state, &["c.broadcast.agent.x"]), None);

        let start = state.clone();
        apply(&mut state, &Event::Disconnected);
        assert_eq!(trouble(&start, &state, &NONE), Some(Trouble::Lost));
        apply(&mut state, &Event::Connected);
        assert_eq!(trouble(&start, &state, &NONE), Some(Trouble::Lost), "a loss is not undone");
        assert_eq!(trouble(&state.clone(), &state, &NONE), None);

        let start = state.clone();
        apply(
            &mut state,
            &Event::ServerError(ServerError::Other("User Authentication Expired".into())),
        );
        assert_eq!(
            trouble(&start, &state, &NONE),
            Some(Trouble::Refused("User Authentication Expired".into()))
        );
        assert!(!apply(&mut state, &Event::LameDuckMode));
    }

    #[test]
    fn only_the_last_violations_are_kept() {
        let mut state = LinkState::default();
        for n in 0..100 {
            let text = format!("Permissions Violation for Publish to \"s{n}\"");
            apply(&mut state, &Event::ServerError(ServerError::Other(text)));
        }
        assert_eq!(state.violations.len(), KEPT_VIOLATIONS);
        assert_eq!(state.violation_count, 100);
    }
}
