//! Real brokers for integration tests: tansu (Kafka API) and Mosquitto, each started on a free
//! local port and stopped when dropped, plus a Kafka reader.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A local port for a server under test, never handed out twice.
///
/// Ports picked by binding port 0 and closing the socket raced: the kernel hands the same
/// ephemeral ports to other binds to port 0 and to outgoing connections (Kafka clients,
/// brokers, probes) until the server binds it, and a test then talked to another test's server
/// or found its own refused. These ports come from below the ephemeral range, where neither the
/// kernel's port 0 nor any outgoing connection goes, and each is reserved with a lock file
/// held until this test process ends, so tests in other processes (nextest, a second
/// `cargo test`) skip it too.
pub fn free_port() -> u16 {
    ports::reserve()
}

mod ports {
    use std::fs::File;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    use std::sync::Mutex;

    /// Lock files held for the life of the process.
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;

    /// The kernel's ephemeral range, first and last port.
    fn ephemeral_range() -> (u32, u32) {
        let text =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let mut ports = text.split_whitespace().filter_map(|p| p.parse().ok());
        match (ports.next(), ports.next()) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => (32_768, 60_999),
        }
    }

    /// Ports outside the ephemeral range: below it, or else above it.
    fn outside_ephemeral() -> (u32, u32) {
        let (lo, hi) = ephemeral_range();
        if lo >= LOWEST + 1_000 {
            (LOWEST, lo)
        } else if hi + 1_000 <= 65_535 {
            (hi + 1, 65_536)
        } else {
            panic!("the ephemeral port range {lo}-{hi} leaves no room for test servers; narrow net.ipv4.ip_local_port_range")
        }
    }

    pub fn reserve() -> u16 {
        let (bottom, top) = outside_ephemeral();
        let span = top - bottom;
        // Processes start at different places, so they rarely contend for the same locks.
        let start = std::process::id().wrapping_mul(7_919) % span;
        let _ = NEXT.compare_exchange(0, start + 1, Relaxed, Relaxed);
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("edge-bridge-test-ports-{uid}"));
        std::fs::create_dir_all(&dir).expect("creating the test port lock directory");
        for _ in 0..span {
            let port = (bottom + NEXT.fetch_add(1, Relaxed) % span) as u16;
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(port.to_string()))
                .expect("opening a test port lock file");
            // SAFETY: flock on a descriptor this function owns.
            let locked = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&lock),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if locked != 0 {
                continue;
            }
            // Free right now (not used by something outside the tests).
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            HELD.lock().unwrap().push(lock);
            return port;
        }
        panic!("no free local port between {bottom} and {top}");
    }
}

/// The port of an address such as `127.0.0.1:1883`.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits until `child` accepts connections on `addr`; fails at once, with the child's exit
/// status, if it ended instead.
pub fn wait_listening(child: &mut Child, addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}) before listening on {addr}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `child` has written `line` to its log file `log`; fails at once, with the log,
/// if it ended instead.
pub fn wait_for_log(child: &mut Child, log: &std::path::Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(line) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process exited ({status}) before logging {line:?}:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} in the log within 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the bridge holds its subscription at an external broker.
pub async fn wait_subscribed(stats: &edge_bridge::stats::Stats) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats
        .mqtt_subscribed
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the bridge did not subscribe at the MQTT broker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the bridge has received `publishes` MQTT messages and then every window has
/// closed (the idle timeout of [`bridge_config`] is 1 s) and none more was emitted for 3 s;
/// returns how many windows were emitted.
pub async fn wait_all_in_and_closed(stats: &edge_bridge::stats::Stats, publishes: u64) -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.readings_in.load(Relaxed) < publishes {
        assert!(
            Instant::now() < deadline,
            "the bridge received {} of {publishes}",
            stats.readings_in.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut last = (u64::MAX, Instant::now());
    loop {
        let emitted = stats.windows_emitted.load(Relaxed);
        if emitted != last.0 {
            last = (emitted, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) && stats.open_windows.load(Relaxed) == 0
        {
            return emitted as usize;
        }
        assert!(Instant::now() < deadline, "windows still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bridge running in this process until [`Running::stop`].
pub struct Running {
    pub stats: std::sync::Arc<edge_bridge::stats::Stats>,
    stop: tokio::sync::oneshot::Sender<()>,
    bridge: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts `config` (see [`spawn_bridge`]) with fresh statistics.
    pub async fn start(config: edge_bridge::Config) -> Running {
        let stats = std::sync::Arc::new(edge_bridge::stats::Stats::default());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let bridge = spawn_bridge(config, stats.clone(), async {
            let _ = stop_rx.await;
        })
        .await;
        Running {
            stats,
            stop,
            bridge,
        }
    }

    /// A clean stop; the bridge must end without an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.bridge.await.unwrap().unwrap();
    }
}

/// Waits up to 60 s for `done`, polling every 50 ms; fails naming `what`.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `mosquitto_pub` (Debian's mosquitto-clients; scripts/test.sh installs it) to
/// `127.0.0.1:port` at QoS 1; the caller adds the rest.
pub fn mosquitto_pub(port: u16) -> Command {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    cmd
}

/// A bridge on `routes` (a configuration file's `[[routes]]`) for the route tests: tansu, and
/// Mosquitto in front when `external` (client id `client_id`), else the embedded broker on
/// `port`. Runs until [`RouteBridge::stop`].
pub struct RouteBridge {
    pub kafka: Tansu,
    pub mosquitto: Option<Mosquitto>,
    pub state: tempfile::TempDir,
    pub config: edge_bridge::Config,
    pub stats: std::sync::Arc<edge_bridge::stats::Stats>,
    /// Where publishers connect: Mosquitto, or the embedded broker.
    pub port: u16,
    running: Running,
}

impl RouteBridge {
    pub async fn start(routes: &str, external: bool, client_id: &str) -> RouteBridge {
        let kafka = Tansu::start();
        let mosquitto = external.then(Mosquitto::start);
        let state = tempfile::tempdir().unwrap();
        let mut config = bridge_config(&kafka.brokers, state.path());
        config.routes = toml::from_str::<edge_bridge::Config>(routes)
            .unwrap()
            .routes;
        let port = match &mosquitto {
            Some(m) => {
                config.mqtt.url = format!("mqtt://127.0.0.1:{}", m.port);
                config.mqtt.client_id = client_id.into();
                m.port
            }
            None => port_of(&config.mqtt.listen),
        };
        config.validate().unwrap();
        let running = Running::start(config.clone()).await;
        if external {
            wait_subscribed(&running.stats).await;
        }
        RouteBridge {
            kafka,
            mosquitto,
            state,
            config,
            stats: running.stats.clone(),
            port,
            running,
        }
    }

    /// Stops the bridge (a clean stop) and waits for it; the brokers keep running.
    pub async fn stop(
        self,
    ) -> (
        Tansu,
        Option<Mosquitto>,
        edge_bridge::Config,
        tempfile::TempDir,
    ) {
        self.running.stop().await;
        (self.kafka, self.mosquitto, self.config, self.state)
    }
}

/// Starts the bridge and spawns its main loop with `shutdown`; returns once it accepts MQTT
/// connections on every listener, or fails the test with the bridge's own start error.
pub async fn spawn_bridge(
    config: edge_bridge::Config,
    stats: std::sync::Arc<edge_bridge::stats::Stats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let bridge = edge_bridge::bridge::Bridge::start(config, stats)
        .await
        .unwrap_or_else(|e| panic!("the bridge did not start: {e:#}"));
    tokio::spawn(bridge.run(shutdown))
}

fn tool(env: &str, default: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let dir = std::env::var("EDGE_TOOLS_DIR")
        .unwrap_or_else(|_| format!("{home}/.cache/edge-bridge-tools"));
    let p = PathBuf::from(dir).join(default);
    assert!(
        p.exists(),
        "{} not found: run the tests with scripts/test.sh, which installs it, or set {env}",
        p.display()
    );
    p
}

/// The Python that has the examples' packages (paho-mqtt, pysparkplug, confluent-kafka):
/// `EDGE_EXAMPLES_PYTHON`, which scripts/test.sh sets.
pub fn examples_python() -> String {
    std::env::var("EDGE_EXAMPLES_PYTHON").expect(
        "EDGE_EXAMPLES_PYTHON: run the tests through scripts/test.sh, which installs the examples' Python packages",
    )
}

/// `GET path` on a local HTTP port: the whole response, headers included.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

/// Wall-clock epoch milliseconds, for readings' event times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

/// A bridge in this process for one test: state in `state`, Kafka at `brokers`, the embedded
/// broker on a free port (MQTT 3.1.1 only), no HTTP port (tests run side by side), and
/// windows closed after 1 s without readings.
pub fn bridge_config(brokers: &str, state: &std::path::Path) -> edge_bridge::Config {
    let mut c = edge_bridge::Config {
        state_dir: state.to_owned(),
        ..edge_bridge::Config::default()
    };
    c.kafka.brokers = brokers.to_owned();
    c.http.listen = String::new();
    c.mqtt.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen_v5 = String::new();
    c.window.idle_timeout = Duration::from_secs(1);
    c
}

/// Runs `cmd` (the bridge binary, configured by its caller) for `run_for`, stops it with
/// SIGTERM, and returns what it wrote to stderr and stdout.
pub fn logs_of_a_run(mut cmd: Command, run_for: Duration) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(run_for);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// A child process killed on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bridge binary in its own process, for kill -9 and SIGTERM; killed on drop.
pub struct BridgeProcess {
    pub child: Child,
}

impl BridgeProcess {
    /// Starts `edge-bridge ARGS` with `env` added, logging at INFO appended to `log`, and its
    /// standard output (the exit summary) to `stdout`.
    pub fn spawn(
        args: &[String],
        env: &[(&str, &str)],
        log: &std::path::Path,
        stdout: Stdio,
    ) -> BridgeProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_edge-bridge"))
            .args(args)
            .env("EDGE_BRIDGE_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .expect("starting edge-bridge");
        BridgeProcess { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; the bridge must exit 0.
    pub fn term(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "edge-bridge exited with {status} after SIGTERM"
        );
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu Kafka-API broker with in-memory storage.
pub struct Tansu {
    _proc: Proc,
    /// What clients bootstrap from (the proxy, if there is one).
    pub brokers: String,
    /// Where tansu itself listens.
    pub direct: SocketAddr,
}

impl Tansu {
    pub fn start() -> Tansu {
        Self::start_advertising(None)
    }

    /// Behind a [`proxy::Proxy`]: clients are told to connect to `advertised_port`.
    pub fn start_advertising(advertised_port: Option<u16>) -> Tansu {
        let bin = tool("TANSU_BIN", "bin/tansu");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", advertised_port.unwrap_or(port));
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        let mut proc = Proc(child);
        wait_listening(&mut proc.0, ([127, 0, 0, 1], port).into(), "tansu");
        Tansu {
            _proc: proc,
            brokers: format!("127.0.0.1:{}", advertised_port.unwrap_or(port)),
            direct: ([127, 0, 0, 1], port).into(),
        }
    }
}

/// A nisshi Kafka-API broker (tansu's successor) that requires SASL: SQLite storage in its own
/// directory, SCRAM users made through its CLI while it runs without authentication, then the
/// broker restarted with `--authentication` on the same storage. (Its in-memory storage cannot
/// do this: users can only be made by a client that is already logged in.)
pub struct Nisshi {
    _proc: Proc,
    _dir: tempfile::TempDir,
    pub brokers: String,
}

impl Nisshi {
    /// `users`: (name, password, mechanism as nisshi's CLI spells it: scram256 or scram512).
    pub fn start_with_users(users: &[(&str, &str, &str)]) -> Nisshi {
        let bin = tool("NISSHI_BIN", "nisshi/bin/nisshi");
        let dir = tempfile::tempdir().unwrap();
        let start = |authentication: bool| {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let mut cmd = Command::new(&bin);
            // nisshi reads a sqlite:// path relative to its working directory.
            cmd.current_dir(dir.path()).args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://nisshi.db",
                "--silent",
            ]);
            if authentication {
                cmd.arg("--authentication");
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting nisshi");
            let mut proc = Proc(child);
            wait_listening(&mut proc.0, ([127, 0, 0, 1], port).into(), "nisshi");
            (proc, url, port)
        };
        let (setup, url, _) = start(false);
        for (name, password, mechanism) in users {
            let out = Command::new(&bin)
                .current_dir(dir.path())
                .args(["user", "create", "--broker", &url, "--mechanism"])
                .args([mechanism, name, password])
                .output()
                .expect("running nisshi user create");
            assert!(
                out.status.success(),
                "nisshi user create {name} ({mechanism}) failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drop(setup);
        let (proc, _, port) = start(true);
        Nisshi {
            _proc: proc,
            _dir: dir,
            brokers: format!("127.0.0.1:{port}"),
        }
    }
}

/// A Mosquitto broker with the project's configuration, on a free port.
pub struct Mosquitto {
    _proc: Proc,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with("")
    }

    /// With `listener_options` (TLS files, password file, ...) added after the listener line;
    /// an option among them (`allow_anonymous`, `max_queued_messages`, ...) replaces the
    /// shipped one. Files the options name must be readable by the `mosquitto` user, to which
    /// the broker drops when started as root.
    pub fn start_with(listener_options: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../broker-config/mosquitto.conf"
        ))
        .unwrap();
        let key = |l: &str| l.split_whitespace().next().map(str::to_owned);
        let overridden: std::collections::HashSet<String> =
            listener_options.lines().filter_map(key).collect();
        // The shipped file listens on 1883 and persists under /var/lib; point both elsewhere.
        let replaced = |l: &str| {
            l.starts_with("listener")
                || l.starts_with("persistence_location")
                || key(l).is_some_and(|k| overridden.contains(&k))
        };
        let conf = base
            .lines()
            .filter(|l| !replaced(l))
            .collect::<Vec<_>>()
            .join("\n")
            + &format!(
                "\nlistener {port} 127.0.0.1\n{listener_options}\npersistence_location {}/\n",
                dir.path().display()
            );
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let bin = std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}; run the tests with scripts/test.sh"));
        let mut proc = Proc(child);
        wait_listening(&mut proc.0, ([127, 0, 0, 1], port).into(), "mosquitto");
        Mosquitto {
            _proc: proc,
            _dir: dir,
            port,
        }
    }
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    pub timestamp: i64,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` partition 0 from the beginning until `want` records arrived and then nothing
/// more for a second (so extra records would be seen too), or until the timeout.
pub fn read_topic(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Record> {
    read_topic_with(brokers, topic, want, timeout, &[])
}

/// [`read_topic`] with more librdkafka settings (security, for instance).
pub fn read_topic_with(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    settings: &[(&str, &str)],
) -> Vec<Record> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{topic}-{}", std::process::id()))
        .set("enable.auto.commit", "false");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        if out.len() >= want && last_new.elapsed() > Duration::from_secs(1) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                last_new = Instant::now();
                out.push(Record {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    timestamp: m.timestamp().to_millis().unwrap_or(-1),
                    headers,
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}
pub mod pki;
pub mod proxy;
pub mod reference;
pub mod tls_proxy;

/// Runs the simulator: `count` messages of `data` to `url` with QoS 1, at `rate` messages/s or
/// as fast as the broker takes them (`None`), with `security`'s credentials and TLS files.
/// Owns everything it needs, so it can be spawned.
pub fn simulate(
    url: &str,
    data: edge_sim::dataset::Dataset,
    security: edge_sim::publish::Security,
    count: u64,
    rate: Option<f64>,
    client_id: &str,
) -> impl std::future::Future<Output = anyhow::Result<edge_sim::publish::Report>> + Send + 'static {
    use edge_sim::publish::{url_lite::Url, PublishOptions};
    let options = PublishOptions {
        url: url.parse::<Url>().unwrap(),
        client_id: client_id.into(),
        qos: 1,
        flood: rate.is_none(),
        messages_per_sec: rate.unwrap_or(1.0),
        count: Some(count),
        duration: None,
        progress: false,
        record: None,
        security,
    };
    async move {
        let (_keep, no_stop) = tokio::sync::watch::channel(false);
        edge_sim::publish::run(data, options, no_stop).await
    }
}

/// [`simulate`] to `127.0.0.1:port` without credentials; returns once the broker acknowledged
/// every message.
pub async fn publish(
    port: u16,
    data: edge_sim::dataset::Dataset,
    count: u64,
    rate: Option<f64>,
    client_id: &str,
) -> edge_sim::publish::Report {
    let url = format!("mqtt://127.0.0.1:{port}");
    let report = simulate(&url, data, Default::default(), count, rate, client_id)
        .await
        .expect("the simulator publishes");
    assert_eq!(report.readings, count);
    report
}
