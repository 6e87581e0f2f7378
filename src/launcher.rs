//! Local replicas as child processes: the one place that knows how to start
//! a replica of the `hearsay` binary on this machine and tell when it is up.
//! Shared by `hearsay cluster` (`src/cli.rs`) and the end-to-end test harness
//! (`tests/support`).
//!
//! It owns what every replica process needs — the binary, `SOCKET_ADDRESS`,
//! `VIEW`, `--set` settings, extra environment, where its output goes, limits
//! set between fork and exec — and waiting for `GET /ready`. Choosing ports,
//! holding the children and signalling them stay with the callers: the CLI
//! takes consecutive ports and stops every child on Ctrl-C; the harness draws
//! ports at random, retries port races, and kills and restarts replicas.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variables with this prefix configure a replica (see
/// `config.rs`); a launcher that must control every setting removes the
/// inherited ones.
pub const SETTINGS_ENV_PREFIX: &str = "HEARSAY_";

/// `127.0.0.1:<base_port + i>` for `i` in `0..count`; an error, not an
/// overflow, when the last port would pass 65535.
pub fn consecutive_addresses(base_port: u16, count: u16) -> anyhow::Result<Vec<String>> {
    (0..count)
        .map(|i| {
            base_port
                .checked_add(i)
                .map(|port| format!("127.0.0.1:{port}"))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{count} replicas from port {base_port} would pass port 65535; \
                         choose a lower --base-port"
                    )
                })
        })
        .collect()
}

/// The `VIEW` that lists every one of `addresses`.
pub fn view_of(addresses: &[impl AsRef<str>]) -> String {
    addresses
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",")
}

/// How to start one replica: build it up, then [`ReplicaCommand::build`] a
/// [`Command`] to spawn (as is, or through `tokio::process::Command::from`).
#[derive(Clone, Debug)]
pub struct ReplicaCommand {
    binary: PathBuf,
    address: String,
    view: String,
    settings: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    scrub_inherited_settings: bool,
    descriptor_limit: Option<u64>,
    die_with_parent: bool,
}

impl ReplicaCommand {
    /// `binary` serving at `address` with this `VIEW`; output inherited,
    /// environment inherited, no limits.
    pub fn new(
        binary: impl Into<PathBuf>,
        address: impl Into<String>,
        view: impl Into<String>,
    ) -> Self {
        ReplicaCommand {
            binary: binary.into(),
            address: address.into(),
            view: view.into(),
            settings: Vec::new(),
            env: Vec::new(),
            log: None,
            scrub_inherited_settings: false,
            descriptor_limit: None,
            die_with_parent: false,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A setting passed as `--set KEY=VALUE`.
    pub fn setting(mut self, key_value: impl Into<String>) -> Self {
        self.settings.push(key_value.into());
        self
    }

    /// Several `--set KEY=VALUE` settings, in order.
    pub fn settings(mut self, key_values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.settings.extend(key_values.into_iter().map(Into::into));
        self
    }

    /// An environment variable; later ones win over earlier ones and over
    /// `SOCKET_ADDRESS` and `VIEW`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Stdout and stderr appended to this file (created if missing), so
    /// several lives of one replica share one log.
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Do not pass on this process's `HEARSAY_*` variables: the replica runs
    /// with only the settings given here (the variables set with
    /// [`Self::env`] still apply).
    pub fn scrub_inherited_settings(mut self) -> Self {
        self.scrub_inherited_settings = true;
        self
    }

    /// At most this many open file descriptors (`RLIMIT_NOFILE`), as a small
    /// container or a low `ulimit -n` would allow.
    pub fn descriptor_limit(mut self, limit: u64) -> Self {
        self.descriptor_limit = Some(limit);
        self
    }

    /// The replica gets SIGKILL when the thread that spawned it ends
    /// (`PR_SET_PDEATHSIG`), so it cannot outlive a launcher that dies
    /// without cleaning up. Spawn from a thread that lives as long as the
    /// replica should.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// The command to spawn. Fails only if the log file cannot be opened.
    pub fn build(&self) -> std::io::Result<Command> {
        let mut command = Command::new(&self.binary);
        if self.scrub_inherited_settings {
            for key in inherited_settings(std::env::vars_os().map(|(key, _)| key)) {
                command.env_remove(key);
            }
        }
        command
            .env("SOCKET_ADDRESS", &self.address)
            .env("VIEW", &self.view)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null());
        if let Some(path) = &self.log {
            let log = OpenOptions::new().create(true).append(true).open(path)?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        for item in &self.settings {
            command.arg("--set").arg(item);
        }
        let (descriptor_limit, die_with_parent) = (self.descriptor_limit, self.die_with_parent);
        if descriptor_limit.is_some() || die_with_parent {
            // SAFETY: between fork and exec this only calls prctl and
            // setrlimit, which change flags and limits of the new process and
            // neither allocate nor take locks.
            unsafe {
                command.pre_exec(move || {
                    if die_with_parent {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    }
                    if let Some(limit) = descriptor_limit {
                        let limit = libc::rlimit {
                            rlim_cur: limit as libc::rlim_t,
                            rlim_max: limit as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(command)
    }
}

/// The names among `vars` that configure a replica.
fn inherited_settings(vars: impl Iterator<Item = OsString>) -> Vec<OsString> {
    vars.filter(|key| key.to_string_lossy().starts_with(SETTINGS_ENV_PREFIX))
        .collect()
}

/// Whether the replica at `address` answers `GET /ready` with 200.
pub async fn is_ready(http: &reqwest::Client, address: &str) -> bool {
    http.get(format!("http://{address}/ready"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Why a replica did not become ready.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The process ended first, with this status.
    Exited(ExitStatus),
    /// Still not ready after the time allowed.
    TimedOut,
}

/// Polls `GET /ready` at `address` every `poll` until it answers 200 (then
/// how long that took), the process ends (`exited` returns its status), or
/// `within` passes.
pub async fn wait_ready(
    http: &reqwest::Client,
    address: &str,
    within: Duration,
    poll: Duration,
    mut exited: impl FnMut() -> Option<ExitStatus>,
) -> Result<Duration, NotReady> {
    let started = Instant::now();
    loop {
        if is_ready(http, address).await {
            return Ok(started.elapsed());
        }
        if let Some(status) = exited() {
            return Err(NotReady::Exited(status));
        }
        if started.elapsed() > within {
            return Err(NotReady::TimedOut);
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn envs(command: &Command) -> Vec<(String, Option<String>)> {
        command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn consecutive_addresses_stop_at_the_last_port() {
        assert_eq!(
            consecutive_addresses(65534, 2).unwrap(),
            ["127.0.0.1:65534", "127.0.0.1:65535"]
        );
        let error = consecutive_addresses(65534, 3).unwrap_err().to_string();
        assert!(error.contains("65535"), "{error}");
        assert!(consecutive_addresses(8082, 0).unwrap().is_empty());
    }

    #[test]
    fn the_command_names_the_replica_its_view_and_its_settings() {
        let view = view_of(&["127.0.0.1:9001", "127.0.0.1:9002"]);
        let command = ReplicaCommand::new("/bin/hearsay", "127.0.0.1:9001", view)
            .setting("gossip_interval_ms=50")
            .settings(["a=1", "b=2"])
            .env("RUST_LOG", "info")
            .build()
            .unwrap();
        assert_eq!(command.get_program(), "/bin/hearsay");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "--set",
                "gossip_interval_ms=50",
                "--set",
                "a=1",
                "--set",
                "b=2"
            ]
        );
        let envs = envs(&command);
        for expected in [
            ("SOCKET_ADDRESS", "127.0.0.1:9001"),
            ("VIEW", "127.0.0.1:9001,127.0.0.1:9002"),
            ("RUST_LOG", "info"),
        ] {
            assert!(
                envs.contains(&(expected.0.into(), Some(expected.1.into()))),
                "{expected:?} not in {envs:?}"
            );
        }
    }

    #[test]
    fn explicit_variables_survive_scrubbing_and_override_the_defaults() {
        let command = ReplicaCommand::new("hearsay", "127.0.0.1:9001", "127.0.0.1:9001")
            .scrub_inherited_settings()
            .env("HEARSAY_CAUSAL_WAIT_MS", "10")
            .env("VIEW", "127.0.0.1:9009")
            .build()
            .unwrap();
        let envs = envs(&command);
        assert!(envs.contains(&("HEARSAY_CAUSAL_WAIT_MS".into(), Some("10".into()))));
        assert!(envs.contains(&("VIEW".into(), Some("127.0.0.1:9009".into()))));
    }

    #[test]
    fn only_hearsay_variables_count_as_inherited_settings() {
        let vars = ["HEARSAY_CONFIG", "PATH", "hearsay_lower", "HEARSAY_"].map(OsString::from);
        assert_eq!(
            inherited_settings(vars.into_iter()),
            [OsString::from("HEARSAY_CONFIG"), OsString::from("HEARSAY_")]
        );
    }

    #[test]
    fn logs_are_appended_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("replica.log");
        std::fs::write(&log, "earlier life\n").unwrap();
        let status = ReplicaCommand::new("sh", "127.0.0.1:9001", "127.0.0.1:9001")
            .log_to(&log)
            .build()
            .unwrap()
            .args(["-c", "echo out; echo err >&2"])
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("earlier life\n"), "{text}");
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
    }

    #[test]
    fn the_descriptor_limit_applies_to_the_child() {
        let output = ReplicaCommand::new("sh", "127.0.0.1:9001", "127.0.0.1:9001")
            .descriptor_limit(64)
            .die_with_parent()
            .build()
            .unwrap()
            .args(["-c", "ulimit -n"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "64");
    }

    /// An address nothing listens on (bound, then released).
    fn silent_address() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn waiting_stops_when_the_process_exits_or_time_runs_out() {
        let address = silent_address();
        let poll = Duration::from_millis(5);
        let crashed = ExitStatus::from_raw(1 << 8);
        assert_eq!(
            wait_ready(&http(), &address, Duration::from_secs(5), poll, || Some(
                crashed
            ))
            .await,
            Err(NotReady::Exited(crashed))
        );
        assert_eq!(
            wait_ready(&http(), &address, Duration::from_millis(50), poll, || None).await,
            Err(NotReady::TimedOut)
        );
    }

    #[tokio::test]
    async fn waiting_ends_when_ready_answers_200() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().route("/ready", axum::routing::get(|| async { "ready" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let took = wait_ready(
            &http(),
            &address,
            Duration::from_secs(5),
            Duration::from_millis(5),
            || None,
        )
        .await;
        assert!(took.is_ok(), "{took:?}");
    }
}
