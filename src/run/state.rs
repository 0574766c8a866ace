//! The state of a container as `ps` shows it: created, running (a supervisor holds its run
//! lock) or exited (with its exit code), and Docker's relative times (`Up 3 minutes`,
//! `Exited (0) 2 seconds ago`, `2 minutes ago`) computed with jiff.

use crate::store::{ContainerRecord, RunStatus, Store};
use jiff::Timestamp;

/// Now, as RFC 3339 with nanoseconds (UTC).
pub fn now() -> String {
    Timestamp::now().to_string()
}

/// Seconds from `ts` (RFC 3339) to now; `None` if it does not parse.
pub fn seconds_since(ts: &str) -> Option<i64> {
    let t: Timestamp = ts.parse().ok()?;
    Some(Timestamp::now().duration_since(t).as_secs().max(0))
}

/// Docker's `HumanDuration` (go-units): "Less than a second", "5 seconds", "About a
/// minute", "3 minutes", "About an hour", "5 hours", "3 days", "2 weeks", "4 months", "2 years".
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 1 {
        return "Less than a second".into();
    }
    if secs == 1 {
        return "1 second".into();
    }
    if secs < 60 {
        return format!("{secs} seconds");
    }
    let minutes = secs / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (secs + 1800) / 3600;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", secs / 3600 / 24 / 365)
}

/// "2 minutes ago" for an RFC 3339 time (the text itself when it does not parse).
pub fn ago(ts: &str) -> String {
    match seconds_since(ts) {
        Some(s) => format!("{} ago", human_duration(s)),
        None => ts.to_string(),
    }
}

/// A container's state as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Never ran (or its start failed).
    Created,
    /// Running since (RFC 3339).
    Running { since: String },
    /// Exited with a code, at (RFC 3339).
    Exited { code: i32, at: String },
}

impl State {
    /// Docker's STATUS column.
    pub fn status(&self) -> String {
        match self {
            State::Created => "Created".into(),
            State::Running { since } => {
                format!("Up {}", human_duration(seconds_since(since).unwrap_or(0)))
            }
            State::Exited { code, at } => format!("Exited ({code}) {}", ago(at)),
        }
    }

    /// `created`, `running` or `exited`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running { .. } => "running",
            State::Exited { .. } => "exited",
        }
    }

    /// True while running.
    pub fn is_running(&self) -> bool {
        matches!(self, State::Running { .. })
    }
}

/// The state of `rec`: its record, checked against its run lock (a record that says running
/// while no supervisor holds the lock belongs to a supervisor that was killed, whose
/// container died with it: exited, 137).
pub fn state(store: &Store, rec: &ContainerRecord) -> State {
    let Some(run) = &rec.run else {
        return State::Created;
    };
    let running = store.container_running(rec);
    match run.status {
        _ if running => State::Running {
            since: run.started.clone().unwrap_or_else(now),
        },
        RunStatus::Created => State::Created,
        RunStatus::Exited => State::Exited {
            code: run.exit_code.unwrap_or(0),
            at: run.finished.clone().unwrap_or_else(now),
        },
        RunStatus::Running => State::Exited {
            code: run.exit_code.unwrap_or(137),
            at: run
                .finished
                .clone()
                .or_else(|| run.started.clone())
                .unwrap_or_else(now),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(2), "2 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(180), "3 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(100 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
        let t = (Timestamp::now() - jiff::SignedDuration::from_secs(125)).to_string();
        assert_eq!(ago(&t), "2 minutes ago");
        assert_eq!(
            State::Exited { code: 143, at: t }.status(),
            "Exited (143) 2 minutes ago"
        );
    }
}
