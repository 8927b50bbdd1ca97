//! A verdict: yes / no / unknown, the evidence it was made from, and for a negative
//! one the reason and the remedy (design rule 3).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Yes,
    No,
    /// The host does not let us tell (no interface to probe, unreadable evidence).
    Unknown,
    /// The question does not apply (SNP on an Intel CPU).
    NotApplicable,
}

/// One observation: where it was seen and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// A host path (`/sys/module/kvm_intel/parameters/tdx`), `kernel log` or `cmdline`.
    pub source: String,
    pub observed: String,
}

impl Evidence {
    pub fn new(source: impl Into<String>, observed: impl Into<String>) -> Self {
        Evidence {
            source: source.into(),
            observed: observed.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub state: State,
    pub evidence: Vec<Evidence>,
    /// Why the answer is not `yes` (always set unless `state` is `yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do about it (always set when `state` is `no`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Verdict {
    pub fn yes(evidence: Vec<Evidence>) -> Self {
        Verdict {
            state: State::Yes,
            evidence,
            reason: None,
            remedy: None,
        }
    }

    pub fn no(
        evidence: Vec<Evidence>,
        reason: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Verdict {
            state: State::No,
            evidence,
            reason: Some(reason.into()),
            remedy: Some(remedy.into()),
        }
    }

    pub fn unknown(evidence: Vec<Evidence>, reason: impl Into<String>) -> Self {
        Verdict {
            state: State::Unknown,
            evidence,
            reason: Some(reason.into()),
            remedy: None,
        }
    }

    pub fn not_applicable(evidence: Vec<Evidence>, reason: impl Into<String>) -> Self {
        Verdict {
            state: State::NotApplicable,
            evidence,
            reason: Some(reason.into()),
            remedy: None,
        }
    }

    pub fn is_yes(&self) -> bool {
        self.state == State::Yes
    }
}
