//! The built `proximites` binary, run as users run it: its command line, and `serve` on a
//! loopback port, killed when the test ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_proximites");

/// The binary, run in `dir`, shielded from the environment variables its options fall back to.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("PROXIMITES_LISTEN")
        .env_remove("PROXIMITES_NO_DEMO")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// A `sqlite://` URL of the database file `db`.
pub fn database_url(db: &Path) -> String {
    format!("sqlite://{}", db.display())
}

/// A database the commands are pointed at: a SQLite file, or a URL as it is.
pub trait AsUrl {
    fn as_url(&self) -> String;
}

impl AsUrl for Path {
    fn as_url(&self) -> String {
        database_url(self)
    }
}

impl AsUrl for std::path::PathBuf {
    fn as_url(&self) -> String {
        database_url(self)
    }
}

impl AsUrl for str {
    fn as_url(&self) -> String {
        self.to_owned()
    }
}

impl AsUrl for String {
    fn as_url(&self) -> String {
        self.clone()
    }
}

/// Kills and reaps the child when dropped, so that no process outlives its test, failed or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server that forks workers (nginx), stopped when dropped as its service manager stops it:
/// SIGTERM, so that it stops its workers too (SIGKILL would leave them running, still bound to
/// the port), then SIGKILL if it is still there after 5 s.
pub struct StopOnDrop(pub Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `proximites serve`, killed when dropped.
pub struct Server {
    pub process: KillOnDrop,
    pub base: String,
    /// Its stderr so far, ANSI codes removed; shown when a test fails.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.process.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server still runs {within:?} after SIGTERM; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}--- end ---", self.log());
        }
    }
}

/// Removes the terminal escape sequences (`ESC [ … letter`) tracing adds for colours.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in the server's `… listening on http://ADDR` log line.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Starts `proximites [--database-url DB] serve --listen 127.0.0.1:0 [--no-demo]` in `dir`, learns
/// its port from the log and waits until /healthz answers.
pub async fn spawn_server(dir: &Path, db: Option<&Path>, demo: bool) -> Server {
    spawn_server_with(dir, db, demo, &[]).await
}

/// `spawn_server` with more `serve` options.
pub async fn spawn_server_with(
    dir: &Path,
    db: Option<&(impl AsUrl + ?Sized)>,
    demo: bool,
    extra: &[&str],
) -> Server {
    let mut command = command(dir);
    command.args(["--log", "info"]);
    if let Some(db) = db {
        command.args(["--database-url", &db.as_url()]);
    }
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    if !demo {
        command.arg("--no-demo");
    }
    command.args(extra);
    spawn(command).await
}

/// Starts the `serve` command `command` (its stderr is piped here), learns its port from the
/// log and waits until /healthz answers.
pub async fn spawn(mut command: Command) -> Server {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proximites serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let process = KillOnDrop(child);
    let log = Arc::new(Mutex::new(String::new()));
    let (found, address) = mpsc::channel();
    let thread_log = Arc::clone(&log);
    // Reads the log to its end, so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut found = Some(found);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            if let Some(address) = listening_address(&text) {
                if let Some(found) = found.take() {
                    let _ = found.send(address);
                }
            }
            if let Ok(mut log) = thread_log.lock() {
                log.push_str(&text);
            }
            line.clear();
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| {
            let log = log.lock().map(|l| l.clone()).unwrap_or_default();
            panic!("the server did not say where it listens ({e}); its log:\n{log}")
        });
    let server = Server {
        process,
        base: format!("http://{address}"),
        log,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(server.url("/healthz")).send().await {
            if response.status().is_success() {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "/healthz never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the browser test `frontend/tests/{script}` with node against `server`, with `args`
/// after its address, in Debian's Chromium (`CHROMIUM`, else `/usr/bin/chromium`); fails with
/// what it printed and the server's log.
pub async fn browser_script(server: &Server, script: &str, args: &[String]) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (.ci/run does it)"
    );
    let frontend = concat!(env!("CARGO_MANIFEST_DIR"), "/frontend");
    let mut command = Command::new("node");
    command
        .arg(format!("tests/{script}"))
        .arg(&server.base)
        .args(args)
        .env("CHROMIUM", chromium)
        .current_dir(frontend);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run node"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        server.log()
    );
}

/// The login form's token and the cookie it is bound to, from the page.
pub async fn login_form(client: &reqwest::Client, server: &Server) -> (String, String) {
    login_form_at(client, &server.base).await
}

/// [`login_form`] of the server (or load balancer) at `base`.
pub async fn login_form_at(client: &reqwest::Client, base: &str) -> (String, String) {
    let page = client
        .get(format!("{base}/espace/connexion"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let form = page.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = form.find(marker).unwrap() + marker.len();
    (
        form[start..start + form[start..].find('"').unwrap()].to_owned(),
        cookie,
    )
}
