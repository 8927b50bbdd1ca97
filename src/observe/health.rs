//! Which parts of `cchost run` are serving: each service, and each device-plugin
//! endpoint, has a state here. **Ready** means every part is serving (what `/readyz`
//! answers and the DaemonSet's readiness probe asks); **started** means every part has
//! reported at least once (what systemd's `READY=1` says). A change wakes whoever
//! [`subscribe`](Health::subscribe)d.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use super::metrics::METRICS;

/// The state of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not reported yet (start-up).
    Starting,
    Serving,
    /// Not serving, and why (a failed service waiting to be restarted, a socket that
    /// cannot be served, a backend that refuses writes).
    NotServing(String),
}

/// The parts and their states.
pub struct Health {
    parts: Mutex<BTreeMap<String, State>>,
    changed: watch::Sender<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            parts: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

/// A readiness answer: ready or not, and every part's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub ready: bool,
    pub started: bool,
    pub parts: Vec<(String, State)>,
}

impl Readiness {
    /// One line per part: `passthrough: serving`, `labels: not serving: <why>`.
    pub fn text(&self) -> String {
        let mut out = String::from(if self.ready { "ready\n" } else { "not ready\n" });
        for (name, state) in &self.parts {
            let s = match state {
                State::Starting => "starting".to_string(),
                State::Serving => "serving".to_string(),
                State::NotServing(why) => format!("not serving: {why}"),
            };
            out.push_str(&format!("{name}: {s}\n"));
        }
        out
    }

    /// Parts that are not serving, with their state, for logs and `STATUS=`.
    pub(crate) fn not_serving(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter(|(_, s)| *s != State::Serving)
            .map(|(n, s)| match s {
                State::NotServing(why) => format!("{n}: {why}"),
                _ => format!("{n}: starting"),
            })
            .collect()
    }
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, State>> {
        match self.parts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Sets a part's state (adding the part if new).
    pub fn set(&self, part: &str, state: State) {
        let serving = if state == State::Serving { 1.0 } else { 0.0 };
        let changed = {
            let mut parts = self.lock();
            let old = parts.insert(part.to_string(), state.clone());
            old.as_ref() != Some(&state)
        };
        METRICS.service_serving.set(&[part], serving);
        if changed {
            self.publish();
        }
    }

    /// Forgets a part (an endpoint of a resource no longer served, a stopped service).
    pub fn remove(&self, part: &str) {
        let had = self.lock().remove(part).is_some();
        METRICS
            .service_serving
            .retain(|k| k.first().map(String::as_str) != Some(part));
        if had {
            self.publish();
        }
    }

    fn publish(&self) {
        let ready = self.readiness().ready;
        METRICS.ready.set(&[], if ready { 1.0 } else { 0.0 });
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn readiness(&self) -> Readiness {
        let parts: Vec<(String, State)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Readiness {
            ready: parts.iter().all(|(_, s)| *s == State::Serving),
            started: parts.iter().all(|(_, s)| *s != State::Starting),
            parts,
        }
    }

    /// Wakes on every change of any part's state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_serves() {
        let h = Health::default();
        assert!(h.readiness().ready, "nothing to serve is ready");
        h.set("a-test-part", State::Starting);
        h.set("b-test-part", State::Serving);
        let r = h.readiness();
        assert!(!r.ready && !r.started);
        h.set("a-test-part", State::NotServing("socket in the way".into()));
        let r = h.readiness();
        assert!(!r.ready && r.started);
        assert_eq!(r.not_serving(), ["a-test-part: socket in the way"]);
        assert!(r.text().starts_with("not ready\n"), "{}", r.text());
        h.set("a-test-part", State::Serving);
        assert!(h.readiness().ready);
        h.set("a-test-part", State::Starting);
        h.remove("a-test-part");
        assert!(h.readiness().ready);
    }
}
