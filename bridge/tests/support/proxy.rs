//! A TCP proxy the test controls: the uplink between the bridge and the Kafka broker, which
//! the test cuts (every connection closed, new ones refused) and restores, and which counts
//! the bytes it carries each way (what a metered link bills, less TCP/IP headers).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    /// Bytes carried from the clients to the server, and back.
    pub upstream_bytes: Arc<AtomicU64>,
    pub downstream_bytes: Arc<AtomicU64>,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on `port` and forwards to `target`.
    pub fn start(port: u16, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the proxy port");
        listener.set_nonblocking(true).unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (up2, conns2, stop2) = (up.clone(), conns.clone(), stop.clone());
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let downstream_bytes = Arc::new(AtomicU64::new(0));
        let (ups, downs) = (upstream_bytes.clone(), downstream_bytes.clone());
        std::thread::spawn(move || {
            while !stop2.load(SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if !up2.load(SeqCst) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        {
                            let mut c = conns2.lock().unwrap();
                            c.push(client.try_clone().unwrap());
                            c.push(server.try_clone().unwrap());
                        }
                        pipe(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            ups.clone(),
                        );
                        pipe(server, client, downs.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            upstream_bytes,
            downstream_bytes,
            up,
            conns,
            stop,
        }
    }

    /// Cuts the link: closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, carried: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    carried.fetch_add(n as u64, SeqCst);
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
