//! A private PostgreSQL cluster for the tests that need one: Debian's `postgresql` binaries, a
//! data directory and a unix socket in a temporary directory, no TCP port; stopped and removed
//! when dropped. As root (CI containers) the server runs as the `postgres` system user, since
//! PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The role the tests connect as (the cluster's superuser, trusted on its socket).
const ROLE: &str = "proximites";

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The system user the server runs as, when the tests run as root.
    run_as: Option<String>,
}

impl Cluster {
    /// Initialises and starts a new cluster. Panics with what to install when PostgreSQL is
    /// missing (`.ci/run` installs Debian's `postgresql`).
    pub fn start() -> Self {
        let bin = binaries().expect(
            "PostgreSQL 15 ou plus récent requis (apt-get install postgresql ; .ci/run le fait)",
        );
        let dir = tempfile::tempdir().unwrap();
        let run_as = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_owned());
        let data = dir.path().join("data");
        let socket = dir.path().join("socket");
        std::fs::create_dir_all(&socket).unwrap();
        if let Some(user) = &run_as {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id").args([flag, user]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            let (uid, gid) = (id("-u"), id("-g"));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&socket, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let cluster = Self { dir, bin, run_as };
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=60",
            socket.display()
        );
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                cluster.dir.path().join("server.log").to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        cluster
    }

    /// One of the cluster's programs, to run as the server's user.
    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    /// Runs one of the cluster's programs; panics with its output when it fails.
    fn run(&self, name: &str, args: &[&str]) {
        let output = self
            .program(name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            output.status.success(),
            "{name} {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// The URL of database `name` in this cluster, through its socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{ROLE}@localhost/{name}?host={}",
            self.socket().display()
        )
    }

    /// A new, empty database; its URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        self.url(name)
    }

    /// The server's log so far, to show when a test fails.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// The cluster the tests of this process share (`PROXIMITES_TEST_ENGINE=postgres`), started at
/// first use; stopped and removed when the process exits, since a static is never dropped.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| {
        // SAFETY: registers a function without arguments, run once at the process's exit.
        unsafe { libc::atexit(stop_shared) };
        Cluster::start()
    })
}

static SHARED: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.stop();
        let _ = std::fs::remove_dir_all(cluster.dir.path());
    }
}

/// A new database in the shared cluster, named after this process and a counter; its URL.
pub async fn fresh_database() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared()
        .database(&format!("test_{}_{n}", std::process::id()))
        .await
}

impl Cluster {
    /// Stops the server at once (its data is thrown away).
    fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = self
            .program("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of the newest PostgreSQL (15 or later) Debian installed, else of `pg_config`.
fn binaries() -> Option<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (version >= 15 && bin.join("initdb").is_file()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    newest.or_else(|| {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Path::new(&bin).join("initdb").is_file().then_some(bin)
    })
}
