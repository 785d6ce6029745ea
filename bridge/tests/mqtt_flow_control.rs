//! The bridge bounds what it holds unacknowledged from an external broker by itself, whatever
//! the broker's in-flight window says: against a broker that sends QoS 1 publishes without
//! waiting for acks (as Mosquitto 2.0.11 does once its window has grown by itself), the client
//! stops taking them at `relay::MAX_UNACKED`, takes more as soon as it acknowledges, and every
//! ack reaches the broker.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::config::{ExternalBroker, Protocol, Qos};
use edge_bridge::mqtt::external::{External, ExternalOptions};
use edge_bridge::mqtt::relay::MAX_UNACKED;
use edge_bridge::stats::Stats;
use edge_bridge::tasks::Tasks;

/// One MQTT packet: its first byte and its body.
fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        len |= ((b[0] & 0x7f) as usize) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((first[0], body))
}

/// A broker (MQTT 3.1.1) that accepts one client, grants its subscription, then writes QoS 1
/// publishes as fast as the socket takes them, acked or not; counts the PUBACKs it gets.
struct FloodingBroker {
    port: u16,
    pubacks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FloodingBroker {
    fn start() -> FloodingBroker {
        let port = support::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let pubacks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acks, halt) = (pubacks.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (kind, _) = read_packet(&mut s).unwrap();
            assert_eq!(kind >> 4, 1, "CONNECT first");
            s.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
            let (kind, body) = read_packet(&mut s).unwrap();
            assert_eq!(kind >> 4, 8, "SUBSCRIBE next");
            s.write_all(&[0x90, 0x03, body[0], body[1], 0x01]).unwrap();
            let mut reader = s.try_clone().unwrap();
            std::thread::spawn(move || {
                while let Ok((kind, _)) = read_packet(&mut reader) {
                    if kind >> 4 == 4 {
                        acks.fetch_add(1, Relaxed);
                    }
                }
            });
            let payload = br#"{"value":21.5}"#;
            let topic = b"sensors/s1/temperature";
            for pkid in (1..=u16::MAX).cycle() {
                if halt.load(Relaxed) {
                    break;
                }
                let mut p = vec![0x32, (2 + topic.len() + 2 + payload.len()) as u8];
                p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
                p.extend_from_slice(topic);
                p.extend_from_slice(&pkid.to_be_bytes());
                p.extend_from_slice(payload);
                if s.write_all(&p).is_err() {
                    break;
                }
            }
        });
        FloodingBroker {
            port,
            pubacks,
            stop,
        }
    }
}

impl Drop for FloodingBroker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_ignores_its_window_is_held_at_the_bound() {
    let broker = FloodingBroker::start();
    let tasks = Tasks::new();
    let options = ExternalOptions {
        broker: ExternalBroker {
            url: format!("mqtt://127.0.0.1:{}", broker.port).parse().unwrap(),
            credentials: None,
            tls: None,
            client_id: "flow-control".into(),
            qos: Qos::AtLeastOnce,
            protocol: Protocol::V311,
            keep_alive: Duration::from_secs(60),
        },
        tls: None,
        filters: vec!["sensors/+/temperature".into()],
        session: None,
        stats: Arc::new(Stats::default()),
    };
    let mut client = External::start(options, &tasks).unwrap();

    // Taken without acking: the stream stops exactly at the bound (the relay counts packets).
    let mut held = Vec::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(2), client.next()).await {
        held.push(m.unwrap().ack.expect("a QoS 1 publish carries its ack"));
        // Without flow control the flood never ends: fail rather than wait for it.
        assert!(
            held.len() as u64 <= 2 * MAX_UNACKED,
            "the client took {} publishes without acking any (bound {MAX_UNACKED})",
            held.len()
        );
    }
    let taken = held.len() as u64;
    assert_eq!(
        taken, MAX_UNACKED,
        "publishes the client took without acking any"
    );

    // Acks reopen the window: more publishes come, and every ack reaches the broker.
    for token in held.drain(..) {
        client.ack(token).await;
    }
    let mut more = 0u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while more < 2 * MAX_UNACKED && Instant::now() < deadline {
        if let Ok(m) = tokio::time::timeout(Duration::from_secs(1), client.next()).await {
            client.ack(m.unwrap().ack.unwrap()).await;
            more += 1;
        }
    }
    assert!(
        more >= 2 * MAX_UNACKED,
        "after the acks only {more} more publishes came within 5 s"
    );
    // The flood stops; the client is driven as the bridge drives it (reading on), which also
    // hands queued acks to its event loop, until the broker has an ack for every publish.
    broker.stop.store(true, Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.pubacks.load(Relaxed) < taken + more {
        assert!(
            Instant::now() < deadline,
            "the broker got {} acks of {}",
            broker.pubacks.load(Relaxed),
            taken + more
        );
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(20), client.next()).await {
            client.ack(m.unwrap().ack.unwrap()).await;
            more += 1;
        }
    }
    client.close().await;
    tasks.stop(Duration::from_secs(2)).await;
}
