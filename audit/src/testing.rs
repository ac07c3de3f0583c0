//! Test builds only: a real, temporary PostgreSQL server for the tests of the PostgreSQL store
//! (this crate's and the orchestrator's). Never a mock.
//!
//! `initdb` into a fresh temporary directory, then `pg_ctl start` with the server's socket in
//! that directory and no TCP listener at all (so no port can clash with anything). PostgreSQL
//! refuses to run as root: as root, the server runs as the `postgres` system user (`runuser`).
//! Every failure says what failed and how to fix it (`scripts/setup-postgres.sh` installs the
//! server where it is missing); nothing is skipped.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The socket's "port": it only names the socket file, in the server's own directory.
const PORT: u16 = 5432;

/// A PostgreSQL server in a temporary directory; stopped and removed when dropped.
#[derive(Debug)]
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    /// `Some("postgres")` when this process is root.
    run_as: Option<String>,
    /// With TLS: the TCP port on 127.0.0.1 it also listens on, with `ssl` on.
    tls_port: Option<u16>,
}

static SHARED: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempPostgres {
    /// One server for the whole test binary (each test makes its own database): started on first
    /// use, stopped and removed by a watchdog process once this process has exited.
    pub fn shared() -> Result<&'static TempPostgres, String> {
        SHARED
            .get_or_init(|| {
                let server = TempPostgres::start()?;
                server.stop_when_process_exits()?;
                Ok(server)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A server of its own (for a test that stops and restarts it).
    pub fn start() -> Result<TempPostgres, String> {
        Self::start_with(None)
    }

    /// A server of its own that also listens on a free TCP port of 127.0.0.1 with TLS, presenting
    /// the certificate and key in these PEM files (see [`TempPostgres::tls_url`]).
    pub fn start_tls(cert_file: &Path, key_file: &Path) -> Result<TempPostgres, String> {
        Self::start_with(Some((cert_file, key_file)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Result<TempPostgres, String> {
        let bin = server_bin_dir()?;
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = std::env::temp_dir().join(format!(
            "conductor-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tls_port = match tls {
            Some((cert, key)) => {
                for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                    let to = dir.join(name);
                    std::fs::copy(from, &to)
                        .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| format!("cannot protect {}: {e}", to.display()))?;
                }
                Some(free_port()?)
            }
            None => None,
        };
        let server = TempPostgres {
            dir,
            bin,
            run_as,
            tls_port,
        };
        if let Some(user) = &server.run_as {
            let (uid, gid) = user_ids(user)?;
            for path in ["", "server.crt", "server.key"] {
                let path = server.dir.join(path);
                if path.exists() {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .map_err(|e| format!("cannot give {} to {user}: {e}", path.display()))?;
                }
            }
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    /// Starts the (stopped) server again, on the same socket, and waits until it accepts
    /// connections.
    pub fn start_again(&self) -> Result<(), String> {
        let options = match self.tls_port {
            None => format!("-k {} -p {PORT} -c listen_addresses=''", self.dir.display()),
            Some(port) => format!(
                "-k {dir} -p {port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                dir = self.dir.display()
            ),
        };
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
    }

    /// Stops the server (fast: connections are cut, committed data stays).
    pub fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// The connection string of `database` on this server (over its socket).
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.dir.display(),
            self.tls_port.unwrap_or(PORT)
        )
    }

    /// The connection string of the database of `socket_url` (as [`TempPostgres::url`] and
    /// [`TempPostgres::create_database`] give it) over TCP with TLS required; `None` unless the
    /// server was started with [`TempPostgres::start_tls`].
    pub fn tls_url(&self, socket_url: &str) -> Option<String> {
        let database = socket_url
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix("dbname="))?;
        self.tls_port.map(|port| {
            format!("host=127.0.0.1 port={port} user=postgres dbname={database} sslmode=require")
        })
    }

    /// Creates a fresh database named after `name` (plus a counter, so names never clash) and
    /// returns its connection string.
    pub async fn create_database(&self, name: &str) -> Result<String, String> {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let database = format!("{clean}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .map_err(|e| {
                    format!(
                        "cannot connect to the test PostgreSQL in {}: {e}",
                        self.dir.display()
                    )
                })?;
        let driver = tokio::spawn(connection);
        let created = client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .map_err(|e| format!("cannot create database {database}: {e}"));
        drop(client);
        let _ = driver.await;
        created.map(|()| self.url(&database))
    }

    /// A client of `url` (the connection driven on the current runtime), for tests that look at
    /// the tables themselves.
    pub async fn client(url: &str) -> Result<tokio_postgres::Client, String> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of the server's programs (as `postgres` when root); the error carries its output.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(format!(
            "{program} {} failed ({}): {}{}\nserver log:\n{log}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// A process that outlives this one by a moment: once this process is gone, it stops the
    /// server and removes its directory (a static is never dropped).
    fn stop_when_process_exits(&self) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- {}", pg_ctl.display()),
            None => pg_ctl.display().to_string(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the test PostgreSQL's watchdog: {e}"))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, else `pg_config --bindir`.
fn server_bin_dir() -> Result<PathBuf, String> {
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
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|bin| bin.join("initdb").exists());
    from_pg_config.ok_or_else(|| {
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run scripts/setup-postgres.sh (as root) first".to_owned()
    })
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `user` (the server's files must be its own).
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("there is no {user} user to run PostgreSQL as (root may not): install the postgresql package (scripts/setup-postgres.sh)"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Where the server keeps its socket and files: for tests that look at its log.
impl TempPostgres {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
