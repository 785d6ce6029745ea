//! A TLS terminator in front of a plaintext broker: what a Kafka cluster with TLS listeners
//! (optionally requiring client certificates) looks like to the bridge. tansu 0.6 cannot serve
//! TLS itself (its `--cert` and `--key` flags exclude each other), so tests put this in front
//! and have tansu advertise this port. Runs on its own thread and runtime; stops when dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub struct TlsProxy {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsProxy {
    pub fn start(port: u16, upstream: SocketAddr, tls: Arc<ServerConfig>) -> TlsProxy {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = TlsAcceptor::from(tls);
                let serve = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let Ok(mut client) = acceptor.accept(client).await else {
                                return;
                            };
                            let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await
                            else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        TlsProxy {
            port,
            stop: Some(stop),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
