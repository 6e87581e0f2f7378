//! Reading hearsay's `GET /metrics` (Prometheus text format).
//!
//! The bench needs only sums of series filtered by one label, so it reads the
//! text format's sample lines itself rather than pulling in a full exposition
//! parser (the crates for that bring regex and chrono along): a sample line is
//! `name{labels} value [timestamp]`, comments start with `#`. The names it
//! relies on are the constants below.

use anyhow::{bail, Context, Result};

// ---- Metric names the bench relies on (keep in step with hearsay's
// `telemetry::names` and README). Adjust here if the store renames them. ----

/// Counter: gossip rounds this replica started.
pub const GOSSIP_ROUNDS: &str = "hearsay_gossip_rounds_total";
/// Counter: replica-to-replica requests this replica served, label `kind`.
pub const INTERNAL_MESSAGES: &str = "hearsay_internal_messages_total";
/// Counter: bytes of replica-to-replica bodies, labels `kind` and
/// `direction` (in = request, out = reply), counted where they are served.
pub const INTERNAL_BYTES: &str = "hearsay_internal_bytes_total";
/// The label that says what an internal message was for.
pub const KIND_LABEL: &str = "kind";
/// Internal message kinds that make up anti-entropy gossip (push-pull).
pub const GOSSIP_KINDS: &[&str] = &["pull", "push"];
/// Internal message kinds of failure detection.
pub const HEARTBEAT_KINDS: &[&str] = &["heartbeat"];

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Default, Clone)]
pub struct Scrape(pub Vec<Sample>);

/// `k="v",k2="v2"` → pairs, honouring `\"` and `\\` escapes in values.
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let close = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim().to_string(), value));
        rest = after[close + 2..].trim_start_matches([',', ' ']);
    }
    Some(out)
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match (line.find('{'), line.find(' ')) {
                (Some(open), Some(space)) if open < space => {
                    let Some(close) = line.rfind('}') else {
                        continue;
                    };
                    let Some(labels) = parse_labels(&line[open + 1..close]) else {
                        continue;
                    };
                    (&line[..open], labels, &line[close + 1..])
                }
                (_, Some(space)) => (&line[..space], Vec::new(), &line[space..]),
                _ => continue,
            };
            if let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                samples.push(Sample {
                    name: name.to_string(),
                    labels,
                    value,
                });
            }
        }
        Scrape(samples)
    }

    /// Sum of every series of `name`; `None` if the metric is absent.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.sum_where(name, |_| true)
    }

    /// Sum of the series of `name` whose `label` is one of `values`.
    pub fn sum_label(&self, name: &str, label: &str, values: &[&str]) -> Option<f64> {
        self.sum_where(name, |s| {
            s.labels
                .iter()
                .any(|(k, v)| k == label && values.contains(&v.as_str()))
        })
    }

    fn sum_where(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for s in self.0.iter().filter(|s| s.name == name && keep(s)) {
            found = true;
            sum += s.value;
        }
        found.then_some(sum)
    }
}

/// Scrape one replica. Fails with a message that says what is missing.
pub async fn scrape(http: &reqwest::Client, addr: &str) -> Result<Scrape> {
    let resp = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .with_context(|| format!("GET http://{addr}/metrics"))?;
    if !resp.status().is_success() {
        bail!(
            "GET http://{addr}/metrics answered {}: this hearsay build exposes no metrics",
            resp.status()
        );
    }
    Ok(Scrape::parse(&resp.text().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_by_label_and_skips_comments() {
        let text = "# HELP x y\n# TYPE hearsay_internal_bytes_total counter\n\
                    hearsay_internal_bytes_total{kind=\"pull\",direction=\"in\"} 10\n\
                    hearsay_internal_bytes_total{kind=\"push\",direction=\"out\"} 5 1700000000\n\
                    hearsay_internal_bytes_total{kind=\"heartbeat\",direction=\"in\"} 7\n\
                    hearsay_gossip_rounds_total 3\n\
                    odd{note=\"a \\\"quoted\\\" }\"} 1\n\
                    junk\n";
        let s = Scrape::parse(text);
        assert_eq!(
            s.sum_label(INTERNAL_BYTES, KIND_LABEL, GOSSIP_KINDS),
            Some(15.0)
        );
        assert_eq!(s.get(INTERNAL_BYTES), Some(22.0));
        assert_eq!(s.get(GOSSIP_ROUNDS), Some(3.0));
        assert_eq!(
            s.0.iter().find(|x| x.name == "odd").unwrap().labels[0].1,
            "a \"quoted\" }"
        );
        assert_eq!(s.get("junk"), None);
    }
}
