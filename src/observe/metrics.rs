//! Prometheus metrics of `cchost run`: one process-wide registry ([`METRICS`]) and its
//! rendering in the text exposition format, version 0.0.4 (documented at
//! prometheus.io/docs/instrumenting/exposition_formats). Every name is listed, with
//! its labels and meaning, in docs/observability.md.
//!
//! Hand-rolled rather than the `prometheus-client` crate: cchost needs a dozen
//! counters, gauges and one histogram, rendered as text; the crate would add its
//! derive macros and encoders for that. Nothing here can panic: a poisoned lock is
//! taken over (a metric is a number; the worst case is a lost increment), and a call
//! with the wrong number of label values is padded or cut to the family's labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

/// The metric type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Scalar(f64),
    Histogram {
        /// Observations at or below each bucket bound (not cumulative here).
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// One metric family: a name, its label names, and a value per label set.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    /// Upper bounds of the histogram buckets (histograms only), increasing.
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Value>>,
}

impl Family {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
    ) -> Self {
        Family {
            name,
            help,
            kind,
            labels,
            buckets: &[],
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) const fn histogram(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Family {
            name,
            help,
            kind: Kind::Histogram,
            labels,
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<String>, Value>> {
        match self.series.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn key(&self, values: &[&str]) -> Vec<String> {
        (0..self.labels.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_string())
            .collect()
    }

    /// Adds 1 (counters).
    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1.0);
    }

    /// Adds `v` to a counter or gauge.
    pub fn add(&self, values: &[&str], v: f64) {
        let key = self.key(values);
        let mut s = self.lock();
        match s.entry(key).or_insert(Value::Scalar(0.0)) {
            Value::Scalar(x) => *x += v,
            Value::Histogram { .. } => {}
        }
    }

    /// Sets a gauge.
    pub fn set(&self, values: &[&str], v: f64) {
        let key = self.key(values);
        self.lock().insert(key, Value::Scalar(v));
    }

    /// Records one observation (histograms).
    pub fn observe(&self, values: &[&str], v: f64) {
        let key = self.key(values);
        let n = self.buckets.len();
        let mut s = self.lock();
        let entry = s.entry(key).or_insert_with(|| Value::Histogram {
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
        });
        if let Value::Histogram { counts, sum, count } = entry {
            if let Some(i) = self.buckets.iter().position(|b| v <= *b)
                && let Some(c) = counts.get_mut(i)
            {
                *c += 1;
            }
            *sum += v;
            *count += 1;
        }
    }

    /// Keeps only the series whose label values `keep` accepts (a gauge of a resource
    /// that is no longer served goes away rather than freezing at its last value).
    pub(crate) fn retain(&self, keep: impl Fn(&[String]) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    /// The value of a counter or gauge, or the count of a histogram (for tests).
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let key = self.key(values);
        self.lock().get(&key).map(|v| match v {
            Value::Scalar(x) => *x,
            Value::Histogram { count, .. } => *count as f64,
        })
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        for (key, value) in self.lock().iter() {
            let labels: Vec<(&str, String)> = self
                .labels
                .iter()
                .zip(key)
                .map(|(n, v)| (*n, v.clone()))
                .collect();
            match value {
                Value::Scalar(x) => {
                    let _ = writeln!(out, "{}{} {}", self.name, label_set(&labels), number(*x));
                }
                Value::Histogram { counts, sum, count } => {
                    let mut cumulative = 0u64;
                    for (bound, c) in self.buckets.iter().zip(counts) {
                        cumulative += c;
                        let mut l = labels.clone();
                        l.push(("le", number(*bound)));
                        let _ = writeln!(out, "{}_bucket{} {cumulative}", self.name, label_set(&l));
                    }
                    let mut l = labels.clone();
                    l.push(("le", "+Inf".to_string()));
                    let _ = writeln!(out, "{}_bucket{} {count}", self.name, label_set(&l));
                    let _ = writeln!(
                        out,
                        "{}_sum{} {}",
                        self.name,
                        label_set(&labels),
                        number(*sum)
                    );
                    let _ = writeln!(out, "{}_count{} {count}", self.name, label_set(&labels));
                }
            }
        }
    }
}

/// A float as the format writes it (`+Inf`, `-Inf`, `NaN` spelt its way).
fn number(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x == f64::INFINITY {
        "+Inf".to_string()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{x}")
    }
}

/// `{a="x",b="y"}`, values escaped (backslash, double quote, line feed); empty when
/// there are no labels.
fn label_set(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(n, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{n}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Allocate latency buckets (seconds): the target is p99 ≤ 300 µs.
const ALLOCATE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
];

/// Every metric `cchost run` exports.
pub struct Metrics {
    pub devices_advertised: Family,
    pub devices_unhealthy: Family,
    pub devices_skipped: Family,
    pub allocate_total: Family,
    pub allocate_seconds: Family,
    pub cc_switches_total: Family,
    pub label_syncs_total: Family,
    pub label_applies_total: Family,
    pub dcap_qgs_up: Family,
    pub dcap_qgs_starts_total: Family,
    pub dcap_qgs_probes_total: Family,
    pub service_serving: Family,
    pub service_restarts_total: Family,
    pub ready: Family,
    pub node_events_total: Family,
}

/// The process-wide registry.
pub static METRICS: Metrics = Metrics {
    devices_advertised: Family::new(
        "cchost_devices_advertised",
        "Devices the device plugin advertises to kubelet (healthy and unhealthy), per resource.",
        Kind::Gauge,
        &["resource"],
    ),
    devices_unhealthy: Family::new(
        "cchost_devices_unhealthy",
        "Advertised devices that are Unhealthy (kubelet stops allocating them), per resource.",
        Kind::Gauge,
        &["resource"],
    ),
    devices_skipped: Family::new(
        "cchost_devices_skipped",
        "Matched PCI functions not advertised in the last scan: reason=unreadable (a sysfs file could not be read or parsed) or reason=other (e.g. not bound to a vfio driver).",
        Kind::Gauge,
        &["reason"],
    ),
    allocate_total: Family::new(
        "cchost_allocate_total",
        "Allocate calls kubelet made, per resource and result (ok, refused).",
        Kind::Counter,
        &["resource", "result"],
    ),
    allocate_seconds: Family::histogram(
        "cchost_allocate_duration_seconds",
        "Time cchost spent answering Allocate (in the gRPC handler, transport not included), per resource.",
        &["resource"],
        ALLOCATE_BUCKETS,
    ),
    cc_switches_total: Family::new(
        "cchost_cc_switches_total",
        "GPU CC-mode switches by cchost run, per result (switched, unchanged, failed, refused).",
        Kind::Counter,
        &["result"],
    ),
    label_syncs_total: Family::new(
        "cchost_label_syncs_total",
        "Labeler rounds, per result (ok, failed).",
        Kind::Counter,
        &["result"],
    ),
    label_applies_total: Family::new(
        "cchost_label_applies_total",
        "Labeler rounds that wrote a change (node labels, NodeFeature or the NFD feature file).",
        Kind::Counter,
        &[],
    ),
    dcap_qgs_up: Family::new(
        "cchost_dcap_qgs_up",
        "1 when the supervised QGS answered its last liveness probe (GET_PLATFORM_INFO), else 0.",
        Kind::Gauge,
        &[],
    ),
    dcap_qgs_starts_total: Family::new(
        "cchost_dcap_qgs_starts_total",
        "QGS starts (child mode) or restart requests (systemd mode), the first included.",
        Kind::Counter,
        &[],
    ),
    dcap_qgs_probes_total: Family::new(
        "cchost_dcap_qgs_probes_total",
        "QGS liveness probes, per result (ok, failed).",
        Kind::Counter,
        &["result"],
    ),
    service_serving: Family::new(
        "cchost_service_serving",
        "1 when a service (or device-plugin endpoint) of cchost run is serving, else 0.",
        Kind::Gauge,
        &["service"],
    ),
    service_restarts_total: Family::new(
        "cchost_service_restarts_total",
        "Restarts of a failed service (or device-plugin endpoint) by cchost run's supervisor.",
        Kind::Counter,
        &["service"],
    ),
    ready: Family::new(
        "cchost_ready",
        "1 when every enabled service is serving (what /readyz answers), else 0.",
        Kind::Gauge,
        &[],
    ),
    node_events_total: Family::new(
        "cchost_node_events_total",
        "Kubernetes Events raised on the Node, per reason and result (posted, failed, repeated: not posted again within 10 min).",
        Kind::Counter,
        &["reason", "result"],
    ),
};

impl Metrics {
    fn families(&self) -> [&Family; 15] {
        [
            &self.devices_advertised,
            &self.devices_unhealthy,
            &self.devices_skipped,
            &self.allocate_total,
            &self.allocate_seconds,
            &self.cc_switches_total,
            &self.label_syncs_total,
            &self.label_applies_total,
            &self.dcap_qgs_up,
            &self.dcap_qgs_starts_total,
            &self.dcap_qgs_probes_total,
            &self.service_serving,
            &self.service_restarts_total,
            &self.ready,
            &self.node_events_total,
        ]
    }

    /// The whole registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for f in self.families() {
            f.render(&mut out);
        }
        out
    }

    /// Every metric name (for the docs test).
    pub fn names(&self) -> Vec<&'static str> {
        self.families().iter().map(|f| f.name()).collect()
    }
}

/// The content type of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render_in_the_text_format() {
        let f = Family::new("t_total", "A \"test\"\ncounter.", Kind::Counter, &["a"]);
        f.inc(&["x\"y\\z\nw"]);
        f.add(&["x\"y\\z\nw"], 2.0);
        let mut out = String::new();
        f.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_total A \"test\"\\ncounter.\n# TYPE t_total counter\nt_total{a=\"x\\\"y\\\\z\\nw\"} 3\n"
        );
        let h = Family::histogram("t_seconds", "h", &[], &[0.1, 1.0]);
        h.observe(&[], 0.05);
        h.observe(&[], 0.5);
        h.observe(&[], 5.0);
        let mut out = String::new();
        h.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_seconds h\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{le=\"0.1\"} 1\nt_seconds_bucket{le=\"1\"} 2\n\
             t_seconds_bucket{le=\"+Inf\"} 3\nt_seconds_sum 5.55\nt_seconds_count 3\n"
        );
    }

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../docs/observability.md");
        for name in METRICS.names() {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "{name} is not in docs/observability.md"
            );
        }
    }

    #[test]
    fn wrong_label_counts_and_retain_do_not_panic() {
        let g = Family::new("g", "g", Kind::Gauge, &["a", "b"]);
        g.set(&["1"], 1.0);
        g.set(&["1", "2", "3"], 2.0);
        assert_eq!(g.get(&["1", ""]), Some(1.0));
        assert_eq!(g.get(&["1", "2"]), Some(2.0));
        g.retain(|k| k[1] == "2");
        assert_eq!(g.get(&["1", ""]), None);
    }
}
