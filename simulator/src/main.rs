//! `edge-sim`: parses the command line and runs the simulator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use edge_sim::profile::Profile;
use edge_sim::publish::{self, url_lite::Url, PublishOptions, Security};

/// Stand-in sensor firmware: publishes synthetic temperature readings over MQTT in the
/// tutorial's payload shape, {"ts": "<ISO 8601>", "value": ...}.
#[derive(Debug, Parser)]
#[command(name = "edge-sim", version)]
struct Args {
    /// MQTT broker to publish to
    #[arg(
        long,
        default_value = "mqtt://127.0.0.1:1883",
        env = "EDGE_SIM_MQTT_URL"
    )]
    mqtt_url: Url,
    /// Number of sensors
    #[arg(long, default_value_t = 5)]
    sensors: u32,
    /// Readings per sensor per second
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Stop after this many readings
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long, e.g. 30s
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed for reproducible data
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Event time of the first reading, epoch ms (default: now). Event time then advances by
    /// 1/rate per sensor per reading, whatever the wall-clock pace.
    #[arg(long)]
    start_ms: Option<i64>,
    /// MQTT QoS of the publishes (0 or 1)
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Publish as fast as the broker takes it
    #[arg(long)]
    flood: bool,
    /// Topic of each sensor; {sensor} is replaced by its id (Sensor1, Sensor2, ...). The
    /// tutorial profile's only: the others publish on their family's topics.
    #[arg(long, default_value = "sensors/{sensor}/temperature")]
    topic_template: String,
    /// Which family of devices to be: its topics, payload shapes and status chatter (the
    /// bridge reads them with the routes of deploy/routes-example.toml)
    #[arg(long, value_enum, default_value = "tutorial")]
    profile: Profile,
    /// How values are drawn
    #[arg(long, value_enum, default_value = "walk")]
    values: Values,
    /// Share of readings sent out of order within the grace period (0..1)
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    /// Share of readings sent late, beyond the grace period (0..1)
    #[arg(long, default_value_t = 0.0)]
    late: f64,
    /// Share of publishes with a malformed payload (0..1)
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Share of readings published twice (0..1)
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// MQTT client id
    #[arg(long, default_value = "edge-sim")]
    client_id: String,
    /// Write every message sent to this file, one JSON object a line
    #[arg(long)]
    record: Option<PathBuf>,
    /// No live rate line
    #[arg(long)]
    quiet: bool,
    /// Username for a broker that asks for one
    #[arg(long, env = "EDGE_SIM_USERNAME")]
    username: Option<String>,
    /// Password (better from the environment than on the command line)
    #[arg(long, env = "EDGE_SIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// mqtts:// only: the CA certificate (PEM) that signed the broker's (default: system CAs)
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// mqtts:// only: client certificate (PEM), for brokers that require one
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// mqtts:// only: the client certificate's private key (PEM)
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    for (name, v) in [
        ("--out-of-order", a.out_of_order),
        ("--late", a.late),
        ("--malformed", a.malformed),
        ("--duplicate", a.duplicate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            eprintln!("error: {name} {v} is not a share between 0 and 1");
            return ExitCode::from(2);
        }
    }
    if a.out_of_order + a.late + a.malformed > 1.0 {
        eprintln!("error: --out-of-order + --late + --malformed exceed 1");
        return ExitCode::from(2);
    }
    if a.profile != Profile::Tutorial && a.topic_template != "sensors/{sensor}/temperature" {
        eprintln!("error: --topic-template is the tutorial profile's; --profile {:?} publishes on its family's topics", a.profile);
        return ExitCode::from(2);
    }
    if a.rate <= 0.0 || a.sensors == 0 {
        eprintln!("error: --rate and --sensors must be positive");
        return ExitCode::from(2);
    }
    let start_ms = a.start_ms.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    });
    let data = Dataset::new(DatasetOptions {
        sensors: a.sensors,
        rate: a.rate,
        start_ms,
        seed: a.seed,
        values: a.values,
        faults: Faults {
            out_of_order: a.out_of_order,
            late: a.late,
            malformed: a.malformed,
            duplicate: a.duplicate,
        },
        topic_template: a.topic_template,
    })
    .with_profile(a.profile);
    let opts = PublishOptions {
        url: a.mqtt_url,
        client_id: a.client_id,
        qos: a.qos,
        flood: a.flood,
        messages_per_sec: a.rate * f64::from(a.sensors),
        count: a.count,
        duration: a.duration,
        progress: !a.quiet,
        record: a.record,
        security: Security {
            username: a.username,
            password: a.password,
            ca_file: a.ca_file,
            client_cert: a.client_cert.zip(a.client_key),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        });
        publish::run(data, opts, stop_rx).await
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
