//! `memory`: resident memory per key of one replica, beside redis-server
//! when it is installed.
//!
//! One local replica (nothing to replicate to, so the figure is the store's
//! own footprint plus whatever the process keeps per key) receives `keys`
//! PUTs of distinct 13-character keys with 22-byte JSON values and null
//! causal metadata, from several concurrent sessions. The bytes per key are
//! the growth of `VmRSS` from before the first write to after the last one
//! (after a short settle, so freed buffers have been returned), divided by
//! the key count. The same keys and values then go to a redis-server started
//! on a free port without persistence, through a minimal RESP writer.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::{Outcome, Session};
use crate::cluster::{free_ports, ClusterArgs, LocalCluster};

/// Options of the `memory` mode.
#[derive(clap::Args, Clone, Debug)]
pub struct MemoryArgs {
    /// Distinct keys written.
    #[arg(long, default_value_t = 200_000)]
    pub keys: usize,
    /// Concurrent client sessions writing them.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Wait after the last write before reading the resident size.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub settle: Duration,
}

/// Resident growth of one server for the whole key set.
#[derive(Clone, Debug)]
pub struct MemoryResult {
    pub system: String,
    pub keys: usize,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl MemoryResult {
    pub fn bytes_per_key(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.keys as f64
    }
}

/// The `i`-th key: 13 characters.
pub fn key(i: usize) -> String {
    format!("k{i:012}")
}

/// The `i`-th value: a JSON string of 22 bytes (quotes included).
pub fn value_text(i: usize) -> String {
    format!("\"value-{i:014}\"")
}

/// `VmRSS` of a process in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs the mode: hearsay always, redis-server when it is on `PATH`.
/// Returns the results and a note for each system skipped.
pub async fn run(
    args: &MemoryArgs,
    cluster: &ClusterArgs,
    log_dir: &Path,
) -> Result<(Vec<MemoryResult>, Vec<String>)> {
    let mut results = vec![hearsay(args, cluster, log_dir).await?];
    let mut notes = Vec::new();
    match which("redis-server") {
        Some(bin) => results.push(redis(args, &bin).await?),
        None => notes.push("redis-server is not on PATH: skipped".to_string()),
    }
    Ok((results, notes))
}

async fn hearsay(args: &MemoryArgs, cluster: &ClusterArgs, log_dir: &Path) -> Result<MemoryResult> {
    let local = LocalCluster::start(cluster.hearsay_spec(log_dir)?, 1).await?;
    let addr = local.addrs()[0].clone();
    // Settle start-up allocations before the baseline.
    tokio::time::sleep(args.settle).await;
    let rss_before = local.rss_bytes(0).context("reading the replica's VmRSS")?;
    let sessions = args.sessions.max(1);
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let addr = addr.clone();
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut session = Session::new(&addr);
            for i in (s..keys).step_by(sessions) {
                let value: Value = serde_json::from_str(&value_text(i))?;
                // Null causal metadata on every write, as a fresh client sends.
                session.metadata = Value::Null;
                if let Outcome::Error(e) = session.put(&key(i), &value).await {
                    bail!("PUT {} failed: {e}", key(i));
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    tokio::time::sleep(args.settle).await;
    let rss_after = local.rss_bytes(0).context("reading the replica's VmRSS")?;
    Ok(MemoryResult {
        system: "hearsay (1 replica)".into(),
        keys: args.keys,
        rss_before,
        rss_after,
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Kills the redis-server it holds when dropped, however the run ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn redis(args: &MemoryArgs, bin: &Path) -> Result<MemoryResult> {
    let port = free_ports(1)?[0];
    let child = Child(
        std::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let pid = child.0.id();
    let addr = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut first = loop {
        match TcpStream::connect(&addr).await {
            Ok(stream) => break stream,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e).context("redis-server did not start listening"),
        }
    };
    // One round trip proves it answers before the baseline is taken.
    first.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut pong = [0u8; 7];
    first.read_exact(&mut pong).await?;
    drop(first);
    tokio::time::sleep(args.settle).await;
    let rss_before = rss_of(pid).context("reading redis-server's VmRSS")?;
    let sessions = args.sessions.max(1);
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let addr = addr.clone();
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(&addr).await?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mine: Vec<usize> = (s..keys).step_by(sessions).collect();
            // Pipelined in batches so that neither side's buffers grow unbounded.
            for batch in mine.chunks(256) {
                let mut out = Vec::with_capacity(batch.len() * 64);
                for &i in batch {
                    resp_set(&mut out, &key(i), &value_text(i));
                }
                write.write_all(&out).await?;
                for _ in batch {
                    let mut reply = [0u8; 5];
                    read.read_exact(&mut reply).await?;
                    if &reply != b"+OK\r\n" {
                        bail!(
                            "redis-server answered {:?}",
                            String::from_utf8_lossy(&reply)
                        );
                    }
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    tokio::time::sleep(args.settle).await;
    let rss_after = rss_of(pid).context("reading redis-server's VmRSS")?;
    drop(child);
    Ok(MemoryResult {
        system: "redis-server".into(),
        keys: args.keys,
        rss_before,
        rss_after,
    })
}

/// Appends `SET key value` in RESP (an array of bulk strings).
fn resp_set(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    for part in [key, value] {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The result as a Markdown table.
pub fn summary_md(results: &[MemoryResult], notes: &[String]) -> String {
    let mut md = String::from(
        "| system | keys | RSS before (MiB) | RSS after (MiB) | bytes per key |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.0} |\n",
            r.system,
            r.keys,
            r.rss_before as f64 / 1048576.0,
            r.rss_after as f64 / 1048576.0,
            r.bytes_per_key()
        ));
    }
    for note in notes {
        md.push_str(&format!("\n{note}\n"));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_have_the_documented_sizes() {
        assert_eq!(key(7).len(), 13);
        assert_eq!(value_text(199_999).len(), 22);
        assert!(serde_json::from_str::<Value>(&value_text(3)).is_ok());
    }

    #[test]
    fn resp_set_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        resp_set(&mut out, "k", "\"v\"");
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\"v\"\r\n");
    }
}
