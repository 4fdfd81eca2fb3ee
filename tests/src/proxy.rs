//! A loopback TCP proxy whose link can be cut and healed: a network partition for tests.
//!
//! A node configured with `advertise_addr` = the proxy's address is reached by clients and
//! peers only through the proxy. [`Proxy::cut`] blackholes the link: bytes stop flowing both
//! ways on every open connection and new connections are accepted but never forwarded, so the
//! other side sees silence (timeouts), not resets — the harsh kind of partition.
//! [`Proxy::heal`] closes every connection held during the cut (as a real partition long
//! enough would have) and forwards new ones again.
//!
//! Not a traffic shaper (no delay or loss rates). Invariants: the proxy never forwards a byte
//! while cut; each connection copies through a fixed 64 KiB buffer per direction; it stops
//! (closing everything) when dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Link state, observed by every connection task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Up,
    /// Cut since this generation; connections from before or during it close on heal.
    Cut(u64),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    link: watch::Sender<Link>,
    generation: Mutex<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BUF_BYTES: usize = 64 << 10;

impl Proxy {
    /// Listen on a kernel-chosen loopback port; forward to the target once it is set.
    pub async fn start() -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(Mutex::new(None));
        let (link, _) = watch::channel(Link::Up);
        let task = tokio::spawn(accept_loop(listener, target.clone(), link.subscribe()));
        Ok(Proxy {
            addr,
            target,
            link,
            generation: Mutex::new(0),
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded (set once the real server is listening).
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    }

    /// Blackhole the link (idempotent).
    pub fn cut(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if *self.link.borrow() == Link::Up {
            *g += 1;
            let _ = self.link.send(Link::Cut(*g));
        }
    }

    /// Restore the link: connections held through the cut are closed, new ones flow.
    pub fn heal(&self) {
        let _ = self.link.send(Link::Up);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        *self.link.borrow() != Link::Up
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<Mutex<Option<SocketAddr>>>,
    link: watch::Receiver<Link>,
) {
    let conns = tokio_util_like::Tasks::default();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let target = *target.lock().unwrap_or_else(|e| e.into_inner());
        let link = link.clone();
        conns.spawn(async move {
            // Accepted during a cut: hold it silently until the heal, then close.
            if *link.borrow() != Link::Up {
                hold_until_heal(link).await;
                return;
            }
            let Some(target) = target else { return };
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            pipe(client, server, link).await;
        });
    }
}

async fn hold_until_heal(mut link: watch::Receiver<Link>) {
    while *link.borrow_and_update() != Link::Up {
        if link.changed().await.is_err() {
            return;
        }
    }
}

/// Copy both ways until either side closes or the link is cut; on a cut, stop copying and hold
/// both sockets open until the heal, then close them.
async fn pipe(client: TcpStream, server: TcpStream, mut link: watch::Receiver<Link>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = vec![0u8; BUF_BYTES];
    let mut down = vec![0u8; BUF_BYTES];
    loop {
        tokio::select! {
            r = cr.read(&mut up) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if *link.borrow() != Link::Up {
                        break;
                    }
                    if sw.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            r = sr.read(&mut down) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if *link.borrow() != Link::Up {
                        break;
                    }
                    if cw.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
                if *link.borrow_and_update() != Link::Up {
                    break;
                }
            }
        }
    }
    // Cut: whatever was read is dropped, like packets lost on the wire.
    hold_until_heal(link).await;
}

/// A tiny task set that aborts its tasks when dropped (the proxy's connections die with it).
mod tokio_util_like {
    use std::future::Future;

    use std::sync::Mutex;

    #[derive(Default)]
    pub(super) struct Tasks(Mutex<Vec<tokio::task::JoinHandle<()>>>);

    impl Tasks {
        pub(super) fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
            let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
            v.retain(|h| !h.is_finished());
            v.push(tokio::spawn(f));
        }
    }

    impl Drop for Tasks {
        fn drop(&mut self) {
            for h in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                h.abort();
            }
        }
    }
}
