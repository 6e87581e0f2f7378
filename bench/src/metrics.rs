//! Reading hearsay's `GET /metrics` (Prometheus text format).
//!
//! The bench needs only "the sum of all series of metric X", so it reads the
//! text format's sample lines itself rather than pulling in a full exposition
//! parser: a sample line is `name{labels} value [timestamp]`, comments start
//! with `#`. The names it relies on are the constants below; adjust them here
//! if the store renames its metrics.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

// ---- Metric names the bench relies on (keep in step with hearsay's README) ----

/// Counter: gossip rounds this replica started.
pub const GOSSIP_ROUNDS: &str = "hearsay_gossip_rounds_total";
/// Counter: bytes this replica sent in gossip messages (requests and replies).
pub const GOSSIP_BYTES_SENT: &str = "hearsay_gossip_bytes_sent_total";
/// Counter: gossip messages this replica sent.
pub const GOSSIP_MESSAGES_SENT: &str = "hearsay_gossip_messages_sent_total";
/// Gauge (optional): the configured gossip interval, in seconds.
pub const GOSSIP_INTERVAL_SECONDS: &str = "hearsay_gossip_interval_seconds";

/// Sums of every series per metric name in one scrape.
#[derive(Debug, Default, Clone)]
pub struct Scrape(pub HashMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut sums = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The name ends at '{' or at the first space; the value is the
            // first field after the label set.
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => continue,
            };
            let rest = match rest.strip_prefix('{') {
                Some(r) => match r.rfind('}') {
                    Some(close) => &r[close + 1..],
                    None => continue,
                },
                None => rest,
            };
            if let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                *sums.entry(name.to_string()).or_insert(0.0) += value;
            }
        }
        Scrape(sums)
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
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
    fn sums_series_and_skips_comments() {
        let text = "# HELP x y\n# TYPE hearsay_gossip_bytes_sent_total counter\n\
                    hearsay_gossip_bytes_sent_total{peer=\"a b\"} 10\n\
                    hearsay_gossip_bytes_sent_total{peer=\"c\"} 5 1700000000\n\
                    hearsay_gossip_rounds_total 3\n\
                    junk\n";
        let s = Scrape::parse(text);
        assert_eq!(s.get(GOSSIP_BYTES_SENT), Some(15.0));
        assert_eq!(s.get(GOSSIP_ROUNDS), Some(3.0));
        assert_eq!(s.get("junk"), None);
    }
}
