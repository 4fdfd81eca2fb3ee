//! Prometheus text exposition (format 0.0.4) for `GET /metrics`.
//!
//! A writer of metric families from a stats snapshot: the node renders what `/stats` holds, so
//! the two endpoints can never disagree. What it is not: a metrics registry; counters live in the
//! components that own them.
//!
//! Invariants: every family is announced once (`# HELP`, `# TYPE`) before its samples, and all
//! samples of a family are contiguous; a summary's `_sum` and `_count` series belong to it, so
//! no other family may take those names; metric and label names are valid; label values are
//! escaped; non-finite values are written as Prometheus spells them (`NaN`, `+Inf`, `-Inf`).

use std::collections::HashSet;
use std::fmt::Write as _;

/// A family's metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Quantiles (samples labelled `quantile`) plus optional `_sum` and `_count` series.
    Summary,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
        }
    }
}

/// Builds one exposition document.
#[derive(Default)]
pub struct Exposition {
    out: String,
    /// Family names announced, plus the `_sum` / `_count` names their summaries own.
    announced: HashSet<String>,
    current: Option<(String, MetricType)>,
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Exposition {
    /// An empty document.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family. Names are program constants, so an invalid or repeated one is a
    /// programming error and panics in debug builds; release builds skip the family.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) -> bool {
        let owned = if kind == MetricType::Summary {
            vec![
                name.to_owned(),
                format!("{name}_sum"),
                format!("{name}_count"),
            ]
        } else {
            vec![name.to_owned()]
        };
        let fresh = valid_metric_name(name) && owned.iter().all(|n| !self.announced.contains(n));
        debug_assert!(
            fresh,
            "metric family {name:?} is invalid or announced twice"
        );
        if fresh {
            self.announced.extend(owned);
        }
        if !fresh {
            self.current = None;
            return false;
        }
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self.current = Some((name.to_owned(), kind));
        true
    }

    /// Adds a sample to the family started last. Label names must be valid; values are escaped.
    /// A summary's quantile samples come through here with a `quantile` label.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.write_sample("", labels, value);
    }

    /// Adds the `_sum` sample of one series of the summary started last.
    pub fn summary_sum(&mut self, labels: &[(&str, &str)], value: f64) {
        self.summary_part("_sum", labels, value);
    }

    /// Adds the `_count` sample of one series of the summary started last.
    pub fn summary_count(&mut self, labels: &[(&str, &str)], value: f64) {
        self.summary_part("_count", labels, value);
    }

    fn summary_part(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let is_summary = matches!(self.current, Some((_, MetricType::Summary)));
        debug_assert!(is_summary, "{suffix} outside a summary family");
        if is_summary {
            self.write_sample(suffix, labels, value);
        }
    }

    fn write_sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let Some((name, _)) = &self.current else {
            return;
        };
        debug_assert!(
            labels.iter().all(|(k, _)| valid_label_name(k)),
            "bad label in {labels:?}"
        );
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        if value.is_nan() {
            self.out.push_str("NaN");
        } else if value.is_infinite() {
            self.out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(self.out, "{value}");
        }
        self.out.push('\n');
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: MetricType, value: f64) {
        if self.family(name, help, kind) {
            self.sample(&[], value);
        }
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("exposition parses")
    }

    #[test]
    fn families_and_labels_round_trip_through_a_parser() {
        let mut e = Exposition::new();
        e.single(
            "ellipsis_uptime_seconds",
            "Seconds since start.",
            MetricType::Gauge,
            12.5,
        );
        e.family(
            "ellipsis_commands_total",
            "Commands handled.",
            MetricType::Counter,
        );
        e.sample(&[("command", "READ"), ("result", "ok")], 10.0);
        e.sample(&[("command", "WRITE"), ("result", "error")], 2.0);
        let text = e.finish();
        let scrape = parse(&text);
        assert_eq!(scrape.samples.len(), 3);
        let write_errors = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "ellipsis_commands_total" && s.labels.get("command") == Some("WRITE")
            })
            .expect("sample present");
        assert!(matches!(write_errors.value, prometheus_parse::Value::Counter(v) if v == 2.0));
        assert_eq!(
            scrape
                .docs
                .get("ellipsis_uptime_seconds")
                .map(String::as_str),
            Some("Seconds since start.")
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.family(
            "ellipsis_backend_info",
            "Backend\nwith \\ odd help.",
            MetricType::Gauge,
        );
        e.sample(&[("dir", "/data/\"quoted\"\\x\nnext")], 1.0);
        let text = e.finish();
        assert!(
            text.contains(r#"dir="/data/\"quoted\"\\x\nnext""#),
            "{text}"
        );
        assert!(
            text.contains(r"# HELP ellipsis_backend_info Backend\nwith \\ odd help."),
            "{text}"
        );
        assert_eq!(
            text.lines().count(),
            3,
            "escaping keeps one sample per line"
        );
    }

    #[test]
    fn non_finite_values_use_prometheus_spelling() {
        let mut e = Exposition::new();
        e.family("ellipsis_x", "x", MetricType::Gauge);
        e.sample(&[("v", "nan")], f64::NAN);
        e.sample(&[("v", "inf")], f64::INFINITY);
        e.sample(&[("v", "-inf")], f64::NEG_INFINITY);
        let text = e.finish();
        assert!(text.contains("ellipsis_x{v=\"nan\"} NaN"));
        assert!(text.contains("ellipsis_x{v=\"inf\"} +Inf"));
        assert!(text.contains("ellipsis_x{v=\"-inf\"} -Inf"));
    }

    #[test]
    fn a_summary_parses_with_its_quantiles_sum_and_count() {
        let mut e = Exposition::new();
        e.family(
            "ellipsis_request_latency_seconds",
            "Latency.",
            MetricType::Summary,
        );
        for (q, v) in [("0.5", 0.001), ("0.99", 0.004)] {
            e.sample(&[("command", "READ"), ("quantile", q)], v);
        }
        e.summary_sum(&[("command", "READ")], 0.25);
        e.summary_count(&[("command", "READ")], 100.0);
        let text = e.finish();
        assert!(text.contains("# TYPE ellipsis_request_latency_seconds summary\n"));
        assert!(text.contains("ellipsis_request_latency_seconds_sum{command=\"READ\"} 0.25\n"));
        let scrape = parse(&text);
        let quantiles = scrape
            .samples
            .iter()
            .find(|s| s.metric == "ellipsis_request_latency_seconds")
            .expect("summary sample");
        assert_eq!(quantiles.labels.get("command"), Some("READ"));
        let prometheus_parse::Value::Summary(qs) = &quantiles.value else {
            panic!("not a summary: {quantiles:?}");
        };
        assert_eq!(qs.len(), 2);
        assert!(qs.iter().any(|q| q.quantile == 0.99 && q.count == 0.004));
        assert!(scrape
            .samples
            .iter()
            .any(|s| s.metric == "ellipsis_request_latency_seconds_count"
                && s.labels.get("command") == Some("READ")));
    }

    #[test]
    fn a_family_cannot_take_a_summary_series_name() {
        // Debug builds panic on the programming error, release builds skip the family: either
        // way the summary's `_count` series is not announced a second time.
        let taken = std::panic::catch_unwind(|| {
            let mut e = Exposition::new();
            e.family("ellipsis_x_seconds", "x", MetricType::Summary);
            e.family("ellipsis_x_seconds_count", "y", MetricType::Gauge)
        });
        assert!(!matches!(taken, Ok(true)));
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_metric_name("ellipsis_cache_hits_total"));
        assert!(valid_metric_name("a:b_c"));
        assert!(!valid_metric_name("9lives"));
        assert!(!valid_metric_name("has-dash"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("command"));
        assert!(!valid_label_name("__reserved"));
        assert!(!valid_label_name("a.b"));
    }
}
