//! Real etcd processes for the tests: one member or a cluster, each member on
//! free loopback ports (client and peer URLs) with a temp data dir, given
//! extra flags; ready when every member reports the same leader (polled,
//! never a fixed sleep); members can be killed -9, stopped (SIGSTOP),
//! continued and restarted; everything is killed on drop.
//!
//! The `etcd` binary: `$FACTCHECK_ETCD`, else `etcd` on `PATH` (Debian:
//! `apt-get install etcd-server`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use factcheck::etcd::{EtcdClient, EtcdConfig, EtcdTls, MemberStatus};
use tempfile::TempDir;

/// How long a cluster may take to elect a leader, or a member to come back.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One etcd process.
#[derive(Debug)]
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    /// Its id in the cluster, known once it answered a status request.
    pub id: u64,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl EtcdMember {
    /// Running and not stopped.
    pub fn is_live(&self) -> bool {
        self.child.is_some() && !self.stopped
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A cluster of etcd members on loopback (one member is a cluster too).
#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    /// With [`EtcdCluster::start_tls`]: what a client needs (the CA and a
    /// client certificate).
    pub tls: Option<EtcdTls>,
    flags: Vec<String>,
    binary: PathBuf,
    _dir: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdCluster {
    /// The etcd binary, or a panic that says how to get one.
    pub fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("FACTCHECK_ETCD") {
            return PathBuf::from(p);
        }
        std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("etcd"))
                    .find(|p| p.is_file())
            })
            .expect("no `etcd` on PATH (Debian: apt-get install etcd-server) and no $FACTCHECK_ETCD")
    }

    /// One member.
    pub async fn single(flags: &[&str]) -> Self {
        Self::start(1, flags).await
    }

    /// `n` members, each started with `flags` besides its names and URLs;
    /// returns once every member reports the same leader. Ports are picked
    /// free but may be taken before etcd binds them: a cluster whose member
    /// could not bind is started again on other ports.
    pub async fn start(n: usize, flags: &[&str]) -> Self {
        Self::start_with(n, flags, None).await
    }

    /// `n` members serving clients over TLS only, with certificates from
    /// `pki`, and requiring client certificates signed by its CA.
    pub async fn start_tls(n: usize, flags: &[&str], pki: &TestPki) -> Self {
        Self::start_with(n, flags, Some(pki)).await
    }

    async fn start_with(n: usize, flags: &[&str], pki: Option<&TestPki>) -> Self {
        let binary = Self::binary();
        let scheme = if pki.is_some() { "https" } else { "http" };
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if let Some(pki) = pki {
            for (flag, path) in [
                ("--cert-file", pki.path("server.pem")),
                ("--key-file", pki.path("server.key")),
                ("--trusted-ca-file", pki.path("ca.pem")),
            ] {
                flags.push(flag.into());
                flags.push(path.to_string_lossy().into_owned());
            }
            flags.push("--client-cert-auth".into());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let members: Vec<EtcdMember> = (0..n)
                .map(|i| EtcdMember {
                    name: format!("m{i}"),
                    client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                    peer_url: format!("http://127.0.0.1:{}", free_port()),
                    id: 0,
                    data_dir: dir.path().join(format!("m{i}")),
                    log: dir.path().join(format!("m{i}.log")),
                    child: None,
                    stopped: false,
                })
                .collect();
            let mut cluster = EtcdCluster {
                members,
                tls: pki.map(TestPki::client_tls),
                flags: flags.clone(),
                binary: binary.clone(),
                _dir: dir,
            };
            for i in 0..n {
                cluster.spawn(i);
            }
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(e) if attempt < 3 && cluster.logs().contains("address already in use") => {
                    eprintln!("etcd: a port was taken ({e}); starting again on other ports");
                }
                Err(e) => panic!("etcd cluster of {n} did not start: {e}\n{}", cluster.logs()),
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let log = File::options().create(true).append(true).open(&m.log).unwrap();
        let mut cmd = Command::new(&self.binary);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &m.client_url,
                "--advertise-client-urls",
                &m.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &m.peer_url,
                "--initial-advertise-peer-urls",
                &m.peer_url,
            ])
            .args([
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args([
                "--initial-cluster-token",
                "factcheck-test",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ])
            .args(&self.flags)
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // A test process that dies (or exits with a member held in a
        // static) takes its members with it.
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        let m = &mut self.members[i];
        m.child = Some(child);
        m.stopped = false;
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A client configuration for every member, under `prefix`.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.endpoints(), prefix);
        config.tls = self.tls.clone();
        config
    }

    /// A client of every member under `/test/`.
    pub async fn client(&self) -> EtcdClient {
        EtcdClient::connect(&self.config("/test/")).await.unwrap()
    }

    /// A client of member `i` only, under `/test/`, with short deadlines.
    pub fn member_client(&self, i: usize) -> EtcdClient {
        let mut config = EtcdConfig::new([self.members[i].client_url.clone()], "/test/");
        config.connect_timeout = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(1);
        config.tls = self.tls.clone();
        EtcdClient::new_lazy(&config).unwrap()
    }

    /// What every member logged, each under its name.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- {} ({}), last lines:\n{}\n",
                    m.name,
                    m.client_url,
                    tail.join("\n")
                )
            })
            .collect()
    }

    fn signal(&self, i: usize, signal: i32) {
        let pid = self.members[i].pid().expect("the member is not running") as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    /// kill -9 member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        m.stopped = false;
    }

    /// SIGSTOP member `i`: it holds its sockets open and answers nothing.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.members[i].stopped = true;
    }

    /// SIGCONT member `i`.
    pub fn cont(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.members[i].stopped = false;
    }

    /// Starts killed member `i` again on its data dir and ports, and waits
    /// until it is back in the cluster (it reports the leader).
    pub async fn restart(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "member {i} is running: kill it first"
        );
        self.spawn(i);
        if let Err(e) = self.wait_ready().await {
            panic!("etcd member {i} did not come back: {e}\n{}", self.logs());
        }
    }

    /// Waits until every live member answers a status request naming the
    /// same leader, itself live; member ids are learnt on the way. Fails
    /// at once if a member exits.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            for m in &mut self.members {
                if let Some(child) = &mut m.child
                    && let Some(status) = child.try_wait().unwrap()
                {
                    m.child = None;
                    return Err(format!("{} exited ({status})", m.name));
                }
            }
            match self.statuses().await {
                Ok(statuses) => {
                    for (i, s) in &statuses {
                        self.members[*i].id = s.member_id;
                    }
                    let leader = statuses[0].1.leader;
                    let live_ids: Vec<u64> = statuses.iter().map(|(_, s)| s.member_id).collect();
                    if leader != 0
                        && statuses.iter().all(|(_, s)| s.leader == leader)
                        && live_ids.contains(&leader)
                    {
                        return Ok(());
                    }
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed leader within {READY_WITHIN:?}"));
            }
            // the interval between two polls, not a wait for readiness
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The status of every live member, or the first failure.
    pub async fn statuses(&self) -> Result<Vec<(usize, MemberStatus)>, String> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.is_live()) {
            let s = self
                .member_client(i)
                .status()
                .await
                .map_err(|e| format!("{}: {e}", m.name))?;
            out.push((i, s));
        }
        if out.is_empty() {
            return Err("no live member".into());
        }
        Ok(out)
    }

    /// The index of the leader every live member agrees on (waiting for an
    /// election if there is none).
    pub async fn leader(&mut self) -> usize {
        self.wait_ready()
            .await
            .unwrap_or_else(|e| panic!("no leader: {e}\n{}", self.logs()));
        let statuses = self.statuses().await.unwrap();
        let leader = statuses[0].1.leader;
        self.members
            .iter()
            .position(|m| m.id == leader)
            .expect("the leader is a member")
    }

    /// The data dir of member `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // SIGKILL ends a stopped process too
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A CA, a server certificate for `127.0.0.1` and `localhost` and a client
/// certificate, as PEM files in a temp dir (`ca.pem`, `server.pem`,
/// `server.key`, `client.pem`, `client.key`).
pub struct TestPki {
    pub dir: TempDir,
}

impl TestPki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
            ("client", vec![]),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA and the client certificate.
    pub fn client_tls(&self) -> EtcdTls {
        EtcdTls::from_files(
            Some(&self.path("ca.pem")),
            Some(&self.path("client.pem")),
            Some(&self.path("client.key")),
        )
        .unwrap()
    }
}

/// The etcd flags the etcd engine needs: a `Txn` of a whole batch and a
/// request of the largest commit (see `store::engine::etcd`).
pub const ENGINE_FLAGS: &[&str] = &["--max-txn-ops", "65536", "--max-request-bytes", "8389632"];

/// Whether this run's servers use the etcd engine (`FACTCHECK_TEST_STORE=etcd`).
pub fn on_etcd() -> bool {
    std::env::var("FACTCHECK_TEST_STORE").is_ok_and(|s| s == "etcd")
}

/// One etcd member shared by every server of this test process, each under
/// a prefix of its own: started once, on a thread that lives as long as
/// the process (the member's parent-death signal follows the thread that
/// spawned it), and killed with its data dir removed when the process
/// exits (`atexit`: a static is never dropped, and a suite run leaves
/// gigabytes of etcd data and log behind otherwise).
pub fn shared_endpoints() -> Vec<String> {
    static ENDPOINTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    static SHARED: std::sync::Mutex<Option<EtcdCluster>> = std::sync::Mutex::new(None);
    extern "C" fn stop_shared() {
        drop(SHARED.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
    ENDPOINTS
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("shared-etcd".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let cluster = rt.block_on(EtcdCluster::single(ENGINE_FLAGS));
                    let endpoints = cluster.endpoints();
                    *SHARED.lock().unwrap() = Some(cluster);
                    // SAFETY: registers a plain function, once.
                    unsafe { libc::atexit(stop_shared) };
                    tx.send(endpoints).unwrap();
                    loop {
                        std::thread::park();
                    }
                })
                .unwrap();
            rx.recv().expect("the shared etcd started")
        })
        .clone()
}

/// The engine for a test server on `data_dir`: sled, or with
/// `FACTCHECK_TEST_STORE=etcd` the shared etcd under a prefix named after
/// the data dir (a restart on the same dir finds the same store).
pub fn engine_for(data_dir: &Path) -> factcheck::store::EngineConfig {
    if !on_etcd() {
        return factcheck::store::EngineConfig::Sled;
    }
    factcheck::store::EngineConfig::Etcd(EtcdConfig::new(shared_endpoints(), prefix_for(data_dir)))
}

/// The etcd prefix of the store of a test data dir.
pub fn prefix_for(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    format!("/test/{:016x}/", h.finish())
}

/// The flags that put a server binary or CLI command on the test engine.
pub fn engine_args(data_dir: &Path) -> Vec<String> {
    if !on_etcd() {
        return Vec::new();
    }
    vec![
        "--store".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        shared_endpoints().join(","),
        "--etcd-prefix".into(),
        prefix_for(data_dir),
    ]
}
