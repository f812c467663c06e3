//! A TCP proxy a test can cut and restore, to stand in for a network fault.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy a test can cut (every connection dropped, new ones refused) and restore, to
/// simulate a dependency going away without killing it (after crates.io's `chaosproxy.rs`).
///
/// It runs on a thread and runtime of its own: a test that blocks its own runtime (a Kafka
/// client's blocking close, say) must not also stop the traffic that close depends on.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    upstream: watch::Sender<Option<SocketAddr>>,
    up: watch::Sender<bool>,
    accepting: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ChaosProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let proxy = Self::start_unconnected().await;
        proxy.connect_to(upstream);
        proxy
    }

    /// Sets where connections go (connections made before are refused).
    pub fn connect_to(&self, upstream: SocketAddr) {
        self.upstream.send_replace(Some(upstream));
    }

    /// A proxy that holds its port but has nowhere to send traffic yet.
    pub async fn start_unconnected() -> Self {
        let (upstream, upstream_rx) = watch::channel(None);
        let listener = StdListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let (up, _) = watch::channel(true);
        let accepting = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (up2, accepting2) = (up.clone(), accepting.clone());
        std::thread::Builder::new()
            .name("chaos-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = Self::run(listener, upstream_rx, up2, accepting2) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("starting the proxy thread");
        Self {
            addr,
            upstream,
            up,
            accepting,
            stop: Some(stop),
        }
    }

    async fn run(
        listener: TcpListener,
        upstream: watch::Receiver<Option<SocketAddr>>,
        up: watch::Sender<bool>,
        accepting: Arc<AtomicBool>,
    ) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let target = *upstream.borrow();
            let Some(upstream) = target.filter(|_| accepting.load(Ordering::SeqCst)) else {
                drop(client);
                continue;
            };
            let mut down = up.subscribe();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client, mut server) = (client, server);
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = down.wait_for(|up| !*up) => {}
                }
            });
        }
    }

    /// Drops every open connection and refuses new ones until [`ChaosProxy::restore`].
    pub fn cut(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
        self.accepting.store(true, Ordering::SeqCst);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
