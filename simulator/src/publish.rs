//! Publishing the dataset over MQTT (3.1.1), paced or flooding, with a live rate line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;

use crate::dataset::{Dataset, Message};

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub url: url_lite::Url,
    pub client_id: String,
    pub qos: u8,
    /// Publish as fast as the broker takes it instead of at `rate` per sensor.
    pub flood: bool,
    /// Messages per second of wall-clock time when not flooding (sensors x rate).
    pub messages_per_sec: f64,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Print a live line every second.
    pub progress: bool,
    /// Write every message sent, as JSON lines, here.
    pub record: Option<std::path::PathBuf>,
    /// Credentials and TLS files.
    pub security: Security,
}

/// What the simulator presents to a secured broker.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub username: Option<String>,
    pub password: Option<String>,
    /// For `mqtts://`: the CA that signed the broker's certificate (else the system's CAs).
    pub ca_file: Option<std::path::PathBuf>,
    /// For `mqtts://`: a client certificate and its key, PEM.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Security {
    fn apply(&self, tls: bool, opts: &mut MqttOptions) -> anyhow::Result<()> {
        if let Some(user) = &self.username {
            opts.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if !tls {
            if self.ca_file.is_some() || self.client_cert.is_some() {
                bail!("--ca-file and --client-cert need an mqtts:// URL");
            }
            return Ok(());
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let transport = match &self.ca_file {
            Some(ca) => rumqttc::Transport::tls(
                read(ca)?,
                match &self.client_cert {
                    Some((cert, key)) => Some((read(cert)?, read(key)?)),
                    None => None,
                },
                None,
            ),
            None if self.client_cert.is_none() => rumqttc::Transport::tls_with_default_config(),
            None => bail!("--client-cert needs --ca-file"),
        };
        opts.set_transport(transport);
        Ok(())
    }
}

/// A hint for the connection errors whose cause is clear.
fn hint(error: &str) -> &'static str {
    if error.contains("BadUserNamePassword") {
        " (wrong username or password: check --username and --password)"
    } else if error.contains("NotAuthorized") {
        " (the broker wants credentials (--username, --password), or TLS on this port (mqtts://))"
    } else if error.contains("UnknownIssuer") {
        " (the broker's certificate is not signed by --ca-file)"
    } else if error.contains("NotValidForName") {
        " (the broker's certificate does not name the host in --mqtt-url)"
    } else if error.contains("CertificateRequired") || error.contains("HandshakeFailure") {
        " (the broker may require a client certificate: --client-cert, --client-key)"
    } else if error.contains("InvalidContentType") || error.contains("corrupt message") {
        " (no TLS on this port: use mqtt://)"
    } else {
        ""
    }
}

/// Minimal `mqtt://host:port` / `mqtts://host:port` parsing, enough for the simulator.
pub mod url_lite {
    #[derive(Debug, Clone)]
    pub struct Url {
        pub host: String,
        pub port: u16,
        /// `mqtts://`.
        pub tls: bool,
    }

    impl std::str::FromStr for Url {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let (rest, tls) = if let Some(r) = s.strip_prefix("mqtts://") {
                (r, true)
            } else {
                let r = s
                    .strip_prefix("mqtt://")
                    .or_else(|| s.strip_prefix("tcp://"))
                    .ok_or_else(|| {
                        format!("{s:?}: expected mqtt://host:port or mqtts://host:port")
                    })?;
                (r, false)
            };
            let rest = rest.trim_end_matches('/');
            if rest.contains('@') {
                return Err(format!(
                    "{s:?}: give credentials with --username and --password, not in the URL"
                ));
            }
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| format!("{s:?}: bad port"))?),
                None => (rest, if tls { 8883 } else { 1883 }),
            };
            if host.is_empty() {
                return Err(format!("{s:?}: no host"));
            }
            Ok(Url {
                host: host.to_owned(),
                port,
                tls,
            })
        }
    }
}

/// What was sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// MQTT publishes sent (duplicates included).
    pub published: u64,
    /// Distinct readings (a duplicate counts once).
    pub readings: u64,
    pub malformed: u64,
    pub late: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "sent {} readings ({} publishes: {} duplicates, {} malformed, {} late, {} out of order) in {:.2} s = {:.0} publishes/s",
            self.readings,
            self.published,
            self.duplicates,
            self.malformed,
            self.late,
            self.out_of_order,
            secs,
            self.published as f64 / secs
        )
    }
}

/// Publishes until the count or duration is reached (or `stop` turns true), then disconnects
/// cleanly once every publish has left (and, with QoS 1, been acknowledged).
pub async fn run(
    data: Dataset,
    o: PublishOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Report> {
    let mut opts = MqttOptions::new(&o.client_id, &o.url.host, o.url.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    o.security.apply(o.url.tls, &mut opts)?;
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let qos = match o.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => bail!("--qos {q}: the simulator publishes with QoS 0 or 1"),
    };

    // The event loop runs beside the publisher; it reports acks and ends after Disconnect.
    let (acks_tx, acks_rx) = watch::channel(0u64);
    let events = tokio::spawn(async move {
        let mut acks = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acks += 1;
                    let _ = acks_tx.send(acks);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    let e = e.to_string();
                    return Err(anyhow::anyhow!("MQTT connection failed: {e}{}", hint(&e)));
                }
            }
        }
    });

    let mut record = match &o.record {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let start = Instant::now();
    let mut report = Report::default();
    let mut last_line = Instant::now();
    let mut last_published = 0u64;
    for m in data {
        if o.count.is_some_and(|c| report.readings >= c)
            || o.duration.is_some_and(|d| start.elapsed() >= d)
            || *stop.borrow_and_update()
        {
            break;
        }
        if !o.flood {
            let due = start + Duration::from_secs_f64(report.readings as f64 / o.messages_per_sec);
            tokio::time::sleep_until(due.into()).await;
        }
        let times = if m.duplicate { 2 } else { 1 };
        for _ in 0..times {
            let sent = client
                .publish(&m.topic, qos, false, m.bytes().to_vec())
                .await;
            if sent.is_err() {
                // The event loop ended: its error says why.
                return Err(match events.await {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("the MQTT connection closed"),
                });
            }
        }
        count(&mut report, &m);
        if let Some(w) = record.as_mut() {
            serde_json::to_writer(&mut *w, &m)?;
            w.write_all(b"\n")?;
        }
        if o.progress && last_line.elapsed() >= Duration::from_secs(1) {
            let rate =
                (report.published - last_published) as f64 / last_line.elapsed().as_secs_f64();
            eprintln!(
                "edge-sim: {rate:>9.0} publishes/s, {} readings sent",
                report.readings
            );
            last_line = Instant::now();
            last_published = report.published;
        }
        if events.is_finished() {
            break;
        }
    }
    if let Some(mut w) = record {
        w.flush()?;
    }
    if qos == QoS::AtLeastOnce {
        let mut acks = acks_rx;
        let deadline = Instant::now() + Duration::from_secs(60);
        while *acks.borrow_and_update() < report.published
            && Instant::now() < deadline
            && !events.is_finished()
        {
            let _ = tokio::time::timeout(Duration::from_millis(200), acks.changed()).await;
        }
    }
    if events.is_finished() {
        return Err(match events.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => anyhow::anyhow!("the MQTT connection closed"),
            Err(e) => e.into(),
        });
    }
    report.elapsed = start.elapsed();
    client.disconnect().await.ok();
    match tokio::time::timeout(Duration::from_secs(30), events).await {
        Ok(Ok(Ok(()))) => Ok(report),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("timed out waiting for publishes to leave"),
    }
}

fn count(r: &mut Report, m: &Message) {
    use crate::dataset::Kind;
    r.readings += 1;
    r.published += if m.duplicate { 2 } else { 1 };
    r.duplicates += u64::from(m.duplicate);
    match m.kind {
        Kind::Malformed => r.malformed += 1,
        Kind::Late => r.late += 1,
        Kind::OutOfOrder => r.out_of_order += 1,
        Kind::Normal | Kind::Chatter => {}
    }
}
