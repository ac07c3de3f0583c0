//! The bench's own PostgreSQL: started for the run, stopped and removed after it, as the tests'
//! `conductor_audit::testing::TempPostgres` does it (that one is built for tests only, with the
//! audit log's fault hook, which the bench must not link into what it measures).
//!
//! `initdb` into a fresh temporary directory, then `pg_ctl start` with the server's socket in that
//! directory and no TCP listener. Durability is the server's default: `fsync` and
//! `synchronous_commit` on, as a deployment has them (the bench checks and reports both). As root,
//! the server runs as the `postgres` system user, since PostgreSQL refuses root. The clients the
//! bench needs are PostgreSQL's own programs (`createdb`, `psql`, `pgbench`), so it links no
//! driver of its own.

use crate::stats::{Latencies, Summary};
use anyhow::{Context, Result, anyhow, bail};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The socket's "port": it only names the socket file, in the server's own directory.
const PORT: u16 = 5432;

/// A PostgreSQL server in a temporary directory; stopped and removed when dropped.
pub struct Postgres {
    /// Removed when dropped, after the server is stopped.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `Some("postgres")` when this process is root.
    run_as: Option<String>,
}

impl Postgres {
    /// Starts a server in a new directory inside `parent` (which the `postgres` user must be
    /// able to enter when the bench runs as root).
    pub fn start(parent: &Path) -> Result<Postgres> {
        let bin = server_bin_dir()?;
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("conductor-bench-pg-")
            .tempdir_in(parent)
            .with_context(|| {
                format!("cannot make PostgreSQL's directory in {}", parent.display())
            })?;
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to {user}", dir.path().display()))?;
        }
        let server = Postgres { dir, bin, run_as };
        let data = server.data();
        server.run_server(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        let options = format!(
            "-k {} -p {PORT} -c listen_addresses=''",
            server.dir.path().display()
        );
        server.run_server(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &server.dir.path().join("server.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        Ok(server)
    }

    /// The connection string of `database` (over the socket), as the orchestrator takes it.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={database}",
            self.dir.path().display()
        )
    }

    /// Creates database `name` and returns its connection string.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.client("createdb", &[name])?;
        Ok(self.url(name))
    }

    /// Runs `sql` in `database` with `psql` and returns what it printed (unaligned, tuples only).
    pub fn query(&self, database: &str, sql: &str) -> Result<String> {
        self.client(
            "psql",
            &[
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                database,
                "-c",
                sql,
            ],
        )
    }

    /// `samples` commits of one single-row `INSERT`, each its own transaction, one after the other
    /// over one connection (`pgbench`, whose per-transaction log gives each one's latency; the
    /// connection itself is not timed). The table `commit_probe` is made first where missing.
    pub fn commits(&self, database: &str, samples: usize) -> Result<Summary> {
        self.query(
            database,
            "CREATE TABLE IF NOT EXISTS commit_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)",
        )?;
        let work = tempfile::Builder::new()
            .prefix("commit-probe-")
            .tempdir_in(self.dir.path())?;
        let script = work.path().join("insert.sql");
        std::fs::write(
            &script,
            "INSERT INTO commit_probe (body) VALUES ('one row of about the size of an audit record');\n",
        )?;
        let prefix = work.path().join("log");
        let started = std::time::Instant::now();
        self.client(
            "pgbench",
            &[
                "-n",
                "-c",
                "1",
                "-j",
                "1",
                "-t",
                &samples.to_string(),
                "-f",
                &script.to_string_lossy(),
                "-l",
                &format!("--log-prefix={}", prefix.display()),
                database,
            ],
        )?;
        let elapsed = started.elapsed();
        let mut latencies = Latencies::new();
        for entry in std::fs::read_dir(work.path())? {
            let path = entry?.path();
            if !path
                .to_string_lossy()
                .starts_with(&*prefix.to_string_lossy())
            {
                continue;
            }
            for us in transaction_times_us(&std::fs::read_to_string(&path)?)? {
                latencies.record(Duration::from_micros(us));
            }
        }
        if latencies.count() != samples as u64 {
            bail!(
                "pgbench logged {} transactions of {samples}",
                latencies.count()
            );
        }
        Ok(latencies.summary(elapsed))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server's programs, as `postgres` when root; the error carries its output and
    /// the server's log.
    fn run_server(&self, program: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        command.args(args).current_dir(self.dir.path());
        run(command, &path, args).map(drop).map_err(|e| {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            anyhow!("{e:#}\nserver log:\n{log}")
        })
    }

    /// One of PostgreSQL's client programs against this server; returns its standard output.
    fn client(&self, program: &str, args: &[&str]) -> Result<String> {
        let path = self.bin.join(program);
        let mut command = Command::new(&path);
        command
            .args([
                "-h",
                &self.dir.path().to_string_lossy(),
                "-p",
                &PORT.to_string(),
            ])
            .args(["-U", "postgres"])
            .args(args);
        run(command, &path, args)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run_server(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// Each transaction's time in µs from a pgbench per-transaction log, whose lines read
/// `client_id transaction_no time script_no time_epoch time_us [...]`.
fn transaction_times_us(log: &str) -> Result<Vec<u64>> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.split_whitespace()
                .nth(2)
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| anyhow!("not a pgbench log line: {line:?}"))
        })
        .collect()
}

/// Runs `command` to its end; an error names the program, its arguments and what it printed.
fn run(mut command: Command, path: &Path, args: &[&str]) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            path.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, else `pg_config --bindir`.
fn server_bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|bin| bin.join("initdb").exists())
        .ok_or_else(|| {
            anyhow!(
                "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run scripts/setup-postgres.sh (as root) first"
            )
        })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `user` (the server's files must be its own).
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .context("cannot run id")?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                anyhow!(
                    "there is no {user} user to run PostgreSQL as (root may not): install the postgresql package (scripts/setup-postgres.sh)"
                )
            })
    };
    Ok((id("-u")?, id("-g")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_logs_give_each_transaction_time() {
        let log = "0 0 1532 0 1733580000 123456\n0 1 987 0 1733580000 124500\n";
        assert_eq!(transaction_times_us(log).unwrap(), vec![1532, 987]);
        assert!(transaction_times_us("0 0\n").is_err());
    }
}
