//! The ballast binary, started with a config file in a temporary directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ballast")
}

/// A running ballast process; killed when dropped.
pub struct Ballast {
    child: Child,
    pub dir: tempfile::TempDir,
    listeners: HashMap<String, SocketAddr>,
    config_path: PathBuf,
}

impl Ballast {
    /// Starts `ballast run` with `config` (listeners should bind port 0) and waits until every
    /// listener has announced its address.
    pub fn start(config: &str) -> Ballast {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(dir, config)
    }

    /// As `start`, in a directory the caller prepared (certificates, token files).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Ballast {
        let path = dir.path().join("ballast.toml");
        std::fs::write(&path, config).expect("config written");
        let expected = config.matches("[[listeners]]").count() + usize::from(config.contains("[admin]"));
        let mut child = Command::new(binary())
            .args(["run", "-c"])
            .arg(&path)
            .env("BALLAST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the ballast binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listeners = HashMap::new();
        while listeners.len() < expected {
            let line = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("ballast did not announce its listeners (got {listeners:?})");
                }
            };
            if let Some(url) = line.strip_prefix("ballast: admin on ") {
                let addr = url.split("://").nth(1).expect("URL with scheme").parse().expect("address");
                listeners.insert("admin".to_string(), addr);
            }
            if let Some(rest) = line.strip_prefix("ballast: listener ") {
                let (name, url) = rest.split_once(" on ").expect("`NAME on URL`");
                let addr = url.split("://").nth(1).expect("URL with scheme").parse().expect("address");
                listeners.insert(name.to_string(), addr);
            }
        }
        Ballast { child, dir, listeners, config_path: path }
    }

    /// The address listener `name` is bound to.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// `http://ADDR` of listener `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// Replaces the config file (a reload reads it).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).expect("config written");
    }

    /// Sends SIGHUP: reload the config file.
    pub fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.pid().to_string()]).status().expect("kill runs");
        assert!(status.success());
    }

    /// The process id, for /proc readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory of the process now, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("the ballast binary runs")
}

/// Writes `text` to `name` in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("file written");
    path
}
