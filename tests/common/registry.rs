//! A real OCI registry for tests: Debian's `docker-registry` (Distribution 2.8.2) on
//! 127.0.0.1:<free port> with a temporary config. Variants: plain HTTP; TLS (a CA made here with
//! rcgen) plus htpasswd (bcrypt) auth; and a read-only twin (`maintenance.readonly`) serving the
//! same storage. `Drop` kills the child by its PID and waits for it.
//!
//! Without the binary the tests skip with a message, except under `CI=true`, where they fail
//! (`.ci/run` installs the package).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which registry to start.
#[derive(Clone)]
pub enum Variant {
    Plain,
    /// HTTPS with a test CA, and htpasswd auth for one user.
    TlsHtpasswd {
        user: String,
        password: String,
    },
}

pub struct Registry {
    child: Child,
    /// Holds config, logs, certificates and (for the first instance) the storage.
    dir: Arc<tempfile::TempDir>,
    name: String,
    pub port: u16,
    tls: bool,
    variant: Variant,
}

/// `/usr/bin/docker-registry` or the one on PATH; `None` (after a message) when missing outside
/// CI. Under `CI=true` a missing binary is a failure, not a skip.
pub fn registry_binary() -> Option<PathBuf> {
    tool("docker-registry", "registry tests skipped")
}

/// The Debian tool `name` (its package has the same name) on PATH or in /usr/bin. Missing: a
/// failure under `CI=true` (`.ci/run` installs it), else `None` after a SKIP message.
pub fn tool(name: &str, skipped: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed but CI=true: .ci/run must install the {name} package");
        }
        eprintln!("SKIP: {name} not found (apt-get install -y {name}); {skipped}");
    }
    found
}

impl Registry {
    /// Start a registry, or `None` when the binary is missing outside CI.
    pub fn start(variant: Variant) -> Option<Registry> {
        let bin = registry_binary()?;
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        if let Variant::TlsHtpasswd { user, password } = &variant {
            write_tls_files(dir.path());
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).expect("write htpasswd");
        }
        Some(spawn(&bin, dir, "main", variant, false))
    }

    /// A second process on the same storage with `maintenance.readonly` (writes answer 405).
    pub fn read_only_twin(&self) -> Registry {
        let bin = registry_binary().expect("docker-registry");
        spawn(&bin, self.dir.clone(), "readonly", self.variant.clone(), true)
    }

    /// `oci://127.0.0.1:PORT/REPO` (TLS) or `oci+http://127.0.0.1:PORT/REPO`.
    pub fn url(&self, repo: &str) -> String {
        let scheme = if self.tls { "oci" } else { "oci+http" };
        format!("{scheme}://127.0.0.1:{}/{repo}", self.port)
    }

    /// The test CA's PEM file (TLS variant).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the registry keeps a blob's bytes (to tamper with them).
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.storage().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Everything the registry logged so far (access log lines: `"METHOD /v2/... HTTP/1.1" status`).
    /// The registry writes an access-log line after the response, so a client can see the
    /// response first: wait until the log stops growing for 50 ms (at most 2 s) before reading.
    pub fn log(&self) -> String {
        let path = self.dir.path().join(format!("{}.log", self.name));
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = size();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = size();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    /// The requests the access log shows so far: (method, path, status).
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.log()
            .lines()
            .filter_map(|l| {
                // `127.0.0.1 - - [date] "PATCH /v2/... HTTP/1.1" 202 0 "" "tenon/0.1.0"`
                let mut parts = l.split('"');
                let request = parts.nth(1)?;
                let status = parts.next()?.split_whitespace().next()?.parse().ok()?;
                let mut words = request.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string(), status))
            })
            .collect()
    }

    /// How many requests with this method and a path containing `path_part` the log shows.
    pub fn count_requests(&self, method: &str, path_part: &str) -> usize {
        self.requests().iter().filter(|(m, p, _)| m == method && p.contains(path_part)).count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID; then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn spawn(bin: &Path, dir: Arc<tempfile::TempDir>, name: &str, variant: Variant, read_only: bool) -> Registry {
    let tls = matches!(variant, Variant::TlsHtpasswd { .. });
    let d = dir.path();
    let mut last_log = String::new();
    // The port is free when read but may be taken before the registry binds it: retry.
    for _ in 0..5 {
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: {read_only}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: tenon-test-secret\n",
            root = d.join("data").display(),
        );
        if tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: tenon-test\n    path: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display(),
                d.join("htpasswd").display()
            ));
        }
        let config_path = d.join(format!("{name}.yml"));
        std::fs::write(&config_path, config).expect("write registry config");
        let log_path = d.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("registry log");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                break; // exited: likely lost the port race; retry with another port
            }
            if std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
            {
                return Registry { child, dir, name: name.to_string(), port, tls, variant };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "docker-registry did not listen on 127.0.0.1:{port} within 10 s; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("docker-registry did not start after 5 attempts; last log:\n{last_log}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it: `ca.pem`, `server.pem`, `server.key`.
fn write_tls_files(d: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name.push(DnType::CommonName, "tenon test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    std::fs::write(d.join("ca.pem"), ca_cert.pem()).expect("write CA");
    std::fs::write(d.join("server.pem"), cert.pem()).expect("write cert");
    std::fs::write(d.join("server.key"), key.serialize_pem()).expect("write key");
}
