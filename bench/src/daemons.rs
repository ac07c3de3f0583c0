//! The real daemons as child processes: start one, learn its bound addresses from its `listening on`
//! log line, and read its CPU time and memory from `/proc` (the figures that in-process servers would
//! mix up with the load generator's own).
//!
//! A [`Daemon`] is killed when dropped: the bench never leaves a process behind.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long a daemon may take to log its address.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Log lines kept for error messages.
const KEPT_LINES: usize = 30;

/// A running daemon; killed on drop.
pub struct Daemon {
    pub name: String,
    /// The addresses of its `listening on` line, in order (gRPC first for the orchestrator).
    pub addrs: Vec<SocketAddr>,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Daemon {
    /// Starts `program args..` and waits until it logs `listening on <addr>...`. Its stderr is drained
    /// by a thread for its whole life, so a chatty daemon can never block on a full pipe.
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Result<Daemon> {
        Daemon::start(name, program, args, true)
    }

    fn start(name: &str, program: &Path, args: &[String], announced: bool) -> Result<Daemon> {
        let mut child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", std::env::var("BENCH_DAEMON_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} (build it with `cargo build --release -p conductor-orchestrator -p conductor-servers`)", program.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (found, addrs) = mpsc::channel::<Vec<SocketAddr>>();
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if found.is_some() && line.contains("listening on") {
                    let addrs = parse_addrs(&line);
                    if !addrs.is_empty()
                        && let Some(tx) = found.take()
                    {
                        let _ = tx.send(addrs);
                    }
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let mut daemon = Daemon {
            name: name.to_owned(),
            addrs: Vec::new(),
            child,
            log,
        };
        if !announced {
            return Ok(daemon);
        }
        match addrs.recv_timeout(START_DEADLINE) {
            Ok(addrs) => daemon.addrs = addrs,
            Err(_) => bail!(
                "{name} did not log its address within {START_DEADLINE:?}; its log:\n{}",
                daemon.log_tail()
            ),
        }
        Ok(daemon)
    }

    /// Starts a daemon that does not log its address (a peer told its port): the caller waits for it.
    pub fn spawn_unannounced(name: &str, program: &Path, args: &[String]) -> Result<Daemon> {
        Daemon::start(name, program, args, false)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, index: usize) -> String {
        self.addrs
            .get(index)
            .map(|a| format!("http://{a}"))
            .unwrap_or_default()
    }

    /// User + system CPU time of the whole process (all threads) so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        cpu_time_of(&self.pid().to_string())
    }

    /// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |key: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .ok_or_else(|| anyhow!("no {key} in /proc status"))?;
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| anyhow!("bad {key} line"))?
                .parse()?;
            Ok(kb * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    pub fn log_tail(&self) -> String {
        let kept = self.log.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of `/proc/<pid>` (`"self"` for this process): utime + stime in clock ticks.
pub fn cpu_time_of(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (`state`).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc stat"))?
            .parse()?)
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_nanos(
        total * (1_000_000_000 / clock_ticks_per_s()),
    ))
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux the bench targets; `getconf` confirms it.
fn clock_ticks_per_s() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// Every socket address in a log line, ANSI colour codes and punctuation stripped.
fn parse_addrs(line: &str) -> Vec<SocketAddr> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split(|c: char| {
            c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == '"' || c == '='
        })
        .filter_map(|word| word.trim_end_matches(['.', ';', ':']).parse().ok())
        .collect()
}

/// Where the daemons' binaries are: `--bin-dir`, else the directory of this executable (cargo puts
/// every binary of a profile side by side).
pub fn bin_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("the bench executable has no directory"))?;
    // `cargo test` runs from target/<profile>/deps; the binaries are one level up.
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_log_lines() {
        let line = "\u{1b}[32m INFO\u{1b}[0m orchestrator: listening on 127.0.0.1:4000 (gRPC) and 127.0.0.1:4001 (HTTP: /metrics, /mcp)";
        let addrs = parse_addrs(line);
        assert_eq!(
            addrs,
            vec![
                "127.0.0.1:4000".parse().unwrap(),
                "127.0.0.1:4001".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_addrs("INFO listening on 127.0.0.1:5"),
            vec!["127.0.0.1:5".parse().unwrap()]
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time_of("self").is_ok());
    }
}
