//! The command-line client: `get`, `put`, `delete` and `view` against any
//! replica, keeping causal metadata between invocations in a small file so a
//! shell user gets read-your-writes across replicas.
//!
//! Exit codes tell outcomes apart for scripts:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 2 | usage error (bad arguments) |
//! | 3 | not found (404) |
//! | 4 | replica cannot serve yet (503: causal dependencies, draining) |
//! | 5 | could not reach the replica (connection refused, timeout) |
//! | 6 | request rejected (400, 413 or another error status) |

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_UNAVAILABLE: u8 = 4;
pub const EXIT_UNREACHABLE: u8 = 5;
pub const EXIT_REJECTED: u8 = 6;

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Replica to talk to.
    #[arg(
        long,
        env = "HEARSAY_ADDR",
        default_value = "127.0.0.1:8082",
        global = true
    )]
    pub addr: String,
    /// File that keeps the causal metadata between invocations.
    #[arg(long, env = "HEARSAY_METADATA_FILE", global = true)]
    pub metadata_file: Option<PathBuf>,
    /// Neither read nor update the metadata file.
    #[arg(long, global = true)]
    pub no_metadata: bool,
    /// Forget the kept metadata before this request (send null and keep what
    /// the answer hands back): the way on after a replica answers that
    /// dependencies were lost (503 with `lost-dependencies`).
    #[arg(long, global = true)]
    pub reset_metadata: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 5000, global = true)]
    pub timeout_ms: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ViewCommand {
    /// List the replica's view (the default).
    List,
    /// Add a replica: PUT /view.
    Add { address: String },
    /// Remove a replica: DELETE /view.
    Remove { address: String },
}

/// One client operation.
#[derive(Debug, Clone)]
pub enum Operation {
    Get { key: String },
    Put { key: String, value: String },
    Delete { key: String },
    View(ViewCommand),
}

fn default_metadata_file() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".hearsay-metadata.json")
}

fn read_metadata(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Value::Null),
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("metadata file {} is not JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces the file atomically so a crash never leaves half a file.
fn write_metadata(path: &Path, metadata: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(metadata)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A value argument: JSON if it parses, else taken as a string.
fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub async fn run(args: ClientArgs, operation: Operation) -> anyhow::Result<ExitCode> {
    let metadata_file = args
        .metadata_file
        .clone()
        .unwrap_or_else(default_metadata_file);
    let metadata = if args.no_metadata {
        Value::Null
    } else if args.reset_metadata {
        write_metadata(&metadata_file, &Value::Null)?;
        Value::Null
    } else {
        read_metadata(&metadata_file)?
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()?;
    let base = format!("http://{}", args.addr);
    let encode = |key: &str| {
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let request = match &operation {
        Operation::Get { key } => client
            .get(format!("{base}/kvs/{}", encode(key)))
            .json(&json!({ "causal-metadata": metadata })),
        Operation::Put { key, value } => client
            .put(format!("{base}/kvs/{}", encode(key)))
            .json(&json!({ "value": parse_value(value), "causal-metadata": metadata })),
        Operation::Delete { key } => client
            .delete(format!("{base}/kvs/{}", encode(key)))
            .json(&json!({ "causal-metadata": metadata })),
        Operation::View(ViewCommand::List) => client.get(format!("{base}/view")),
        Operation::View(ViewCommand::Add { address }) => client
            .put(format!("{base}/view"))
            .json(&json!({ "socket-address": address })),
        Operation::View(ViewCommand::Remove { address }) => client
            .delete(format!("{base}/view"))
            .json(&json!({ "socket-address": address })),
    };
    // The operator token, as the replica reads it from the same variable.
    let request = match std::env::var("HEARSAY_ADMIN_TOKEN") {
        Ok(token) if !token.is_empty() => request.bearer_auth(token),
        _ => request,
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            eprintln!("hearsay: cannot reach {}: {error}", args.addr);
            return Ok(ExitCode::from(EXIT_UNREACHABLE));
        }
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if let Some(new) = metadata_to_keep(status.as_u16(), &operation, &body) {
        if !args.no_metadata {
            write_metadata(&metadata_file, new)?;
        }
    }
    if status.is_success() {
        print_success(args.output, &operation, &body);
        return Ok(ExitCode::SUCCESS);
    }
    let message = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    match args.output {
        Output::Json => println!("{body}"),
        Output::Table => eprintln!("hearsay: {} {}", status.as_u16(), message),
    }
    if body.get("lost-dependencies").is_some() {
        eprintln!("hearsay: run again with --reset-metadata to drop the lost dependencies");
    }
    Ok(ExitCode::from(match status.as_u16() {
        404 => EXIT_NOT_FOUND,
        503 => EXIT_UNAVAILABLE,
        _ => EXIT_REJECTED,
    }))
}

/// The metadata an answer hands back for the next request: from a success,
/// and from a key-value 404 too (it may say the key was deleted, and a client
/// that saw the delete must never be served the old value afterwards).
fn metadata_to_keep<'a>(status: u16, operation: &Operation, body: &'a Value) -> Option<&'a Value> {
    let key_value = !matches!(operation, Operation::View(_));
    // A 503 with metadata is a write applied here but not acknowledged by
    // enough replicas: the client has seen it, so it keeps it too.
    let adopt = (200..300).contains(&status) || (key_value && (status == 404 || status == 503));
    body.get("causal-metadata")
        .filter(|metadata| adopt && metadata.is_object())
}

fn print_success(output: Output, operation: &Operation, body: &Value) {
    if output == Output::Json {
        println!("{body}");
        return;
    }
    match operation {
        Operation::Get { key } => {
            let value = body.get("value").cloned().unwrap_or(Value::Null);
            println!("{key}\t{value}");
        }
        Operation::Put { key, .. } | Operation::Delete { key } => {
            let result = body.get("result").and_then(Value::as_str).unwrap_or("ok");
            println!("{result}\t{key}");
        }
        Operation::View(ViewCommand::List) => {
            for member in body
                .get("view")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("{}", member.as_str().unwrap_or_default());
            }
        }
        Operation::View(_) => {
            println!(
                "{}",
                body.get("result").and_then(Value::as_str).unwrap_or("ok")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(parse_value("42"), json!(42));
        assert_eq!(parse_value("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_value("hello"), json!("hello"));
    }

    #[test]
    fn metadata_is_kept_from_successes_and_key_value_404s() {
        let get = Operation::Get { key: "k".into() };
        let delete = Operation::Delete { key: "k".into() };
        let m = json!({"a:1@2": 3});
        let found = json!({"result": "found", "value": 1, "causal-metadata": m});
        let missing = json!({"error": "Key does not exist", "causal-metadata": m});
        assert_eq!(metadata_to_keep(200, &get, &found), Some(&m));
        assert_eq!(metadata_to_keep(404, &get, &missing), Some(&m));
        assert_eq!(metadata_to_keep(404, &delete, &missing), Some(&m));
        // An older replica's 404 carries none: the file is left as it was.
        let bare = json!({"error": "Key does not exist"});
        assert_eq!(metadata_to_keep(404, &get, &bare), None);
        let unavailable = json!({"error": "Causal dependencies not satisfied; try again later"});
        assert_eq!(metadata_to_keep(503, &get, &unavailable), None);
        let unacknowledged = json!({"error": "Write not acknowledged", "causal-metadata": m});
        assert_eq!(metadata_to_keep(503, &get, &unacknowledged), Some(&m));
        let view = Operation::View(ViewCommand::Remove {
            address: "127.0.0.1:1".into(),
        });
        assert_eq!(metadata_to_keep(404, &view, &missing), None);
    }

    #[test]
    fn metadata_file_round_trips_and_missing_means_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        assert_eq!(read_metadata(&path).unwrap(), Value::Null);
        write_metadata(&path, &json!({"a:1@2": 3})).unwrap();
        assert_eq!(read_metadata(&path).unwrap(), json!({"a:1@2": 3}));
    }
}
