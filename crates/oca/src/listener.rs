//! The server's listener: accepts connections and serves HTTP/1.1 on them, so that
//! nobody can hoard them.
//!
//! - A request's head must arrive within `header_read_timeout`, and a connection
//!   idle between requests is closed after the same time (hyper's header timer runs
//!   from the moment the connection waits for a request): slowloris headers and idle
//!   sockets go.
//! - At most `max_per_address` connections per source address (IPv6: per /64), and
//!   `max_connections` in all. A connection over either cap makes room by closing
//!   the longest-idle connection *of the same address* (or, over the global cap, of
//!   any address) — one that is not serving a request; with none to close, it is
//!   closed at once. So a client that hoards sockets only ever displaces its own, and
//!   a real request from behind the same address still gets served.
//! - Accept errors (out of file descriptors) back off, from 10 ms to 1 s, instead of
//!   spinning; the pending connections wait in the kernel's backlog meanwhile.
//! - When hyper itself refuses a request it cannot parse (a head over the size limit,
//!   malformed HTTP), the bare answer it writes is replaced with the API's error
//!   document ([`ErrorDocIo`]).
//!
//! A connection that upgrades to a WebSocket (an agent) leaves the caps once the
//! upgrade is done: agents are governed by their own rules (one connection per
//! instance, authenticated).

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// How connections are limited.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_per_address: usize,
    pub max_connections: usize,
    /// The largest request head (request line and headers) read.
    pub max_head_bytes: usize,
}

/// One connection, as the tracker sees it.
struct Conn {
    id: u64,
    key: IpKey,
    /// Requests being served on it now.
    busy: AtomicU32,
    /// When it last started or finished serving a request (ms since the tracker began).
    last_active: AtomicI64,
    /// Told to close.
    evict: Notify,
}

/// The address a cap counts by: an IPv4 address, or an IPv6 /64 (one host's usual
/// allocation; counting single IPv6 addresses would let one host take them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IpKey(u128);

impl IpKey {
    fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey(u32::from(v4) as u128),
                None => IpKey((u128::from(v6) & !((1u128 << 64) - 1)) | 1 << 32),
            },
        }
    }
}

/// Every live HTTP connection, by address.
pub struct Tracker {
    limits: Limits,
    started: Instant,
    next_id: AtomicU64,
    inner: Mutex<HashMap<IpKey, Vec<Arc<Conn>>>>,
    /// One permit per connection, held until its socket is closed, so the global cap
    /// counts descriptors exactly (an evicted connection holds its permit until its
    /// task has dropped the socket).
    permits: Arc<tokio::sync::Semaphore>,
    /// Set when the server stops: connections finish the request they serve, if any,
    /// and close.
    draining: tokio::sync::watch::Sender<bool>,
    /// Connections closed to make room, and connections refused (for figures and logs).
    pub evicted: AtomicU64,
    pub refused: AtomicU64,
}

impl Tracker {
    pub fn new(limits: Limits) -> Arc<Tracker> {
        Arc::new(Tracker {
            permits: Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1))),
            draining: tokio::sync::watch::channel(false).0,
            limits,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            inner: Mutex::new(HashMap::new()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The server stops: every connection finishes the request it serves (if any) and
    /// closes; waits until all have (or `grace` passes). Answers how many were left.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.draining.send_replace(true);
        let deadline = Instant::now() + grace;
        loop {
            let open = self.limits.max_connections.max(1) - self.permits.available_permits();
            if open == 0 || Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn now(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Room for one more connection under the global cap: a permit at once, or after
    /// closing the idlest connection of all, or (every connection serving a request)
    /// when one ends. Meanwhile new connections wait in the listen backlog.
    async fn room(&self) -> tokio::sync::OwnedSemaphorePermit {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return p;
        }
        {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(victim) = idlest(map.values().flatten()) {
                self.evict(&mut map, &victim);
            }
        }
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Admits a connection from `ip`, closing that address's idlest connection to make
    /// room if its cap is reached; `None`: no room (all of them serve a request).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = IpKey::of(ip);
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = map.get(&key).map_or(0, Vec::len);
        if mine >= self.limits.max_per_address {
            let victim = idlest(map.get(&key).into_iter().flatten())?;
            self.evict(&mut map, &victim);
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            busy: AtomicU32::new(0),
            last_active: AtomicI64::new(self.now()),
            evict: Notify::new(),
        });
        map.entry(key).or_default().push(conn.clone());
        Some(Slot {
            tracker: self.clone(),
            conn,
        })
    }

    fn evict(&self, map: &mut HashMap<IpKey, Vec<Arc<Conn>>>, victim: &Arc<Conn>) {
        victim.evict.notify_one();
        remove(map, victim);
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// Live HTTP connections now.
    #[cfg(test)]
    fn connections(&self) -> usize {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }
}

/// The connection not serving a request that has been so the longest.
fn idlest<'a>(conns: impl Iterator<Item = &'a Arc<Conn>>) -> Option<Arc<Conn>> {
    conns
        .filter(|c| c.busy.load(Ordering::Relaxed) == 0)
        .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
        .cloned()
}

fn remove(map: &mut HashMap<IpKey, Vec<Arc<Conn>>>, conn: &Conn) {
    if let Some(list) = map.get_mut(&conn.key) {
        list.retain(|c| c.id != conn.id);
        if list.is_empty() {
            map.remove(&conn.key);
        }
    }
}

/// A connection's place in the tracker; leaving it frees the place.
struct Slot {
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.tracker.inner.lock().unwrap_or_else(|e| e.into_inner());
        remove(&mut map, &self.conn);
    }
}

/// Marks its connection busy while a request is served.
struct Busy {
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl Busy {
    fn new(slot: &Slot) -> Busy {
        slot.conn.busy.fetch_add(1, Ordering::Relaxed);
        slot.conn
            .last_active
            .store(slot.tracker.now(), Ordering::Relaxed);
        Busy {
            conn: slot.conn.clone(),
            tracker: slot.tracker.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active
            .store(self.tracker.now(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether an accept error concerns only the connection being accepted (try the
/// next one at once) rather than the listener (back off).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What every connection is served with.
#[derive(Clone)]
pub struct Site {
    pub app: Router,
    /// `HostId` in the error documents written here.
    pub host_id: String,
    /// TLS, unless the server was told to serve plain HTTP.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

/// Accepts and serves connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    site: Site,
    tracker: Arc<Tracker>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(
                        "accept error: {e} (backing off; connections wait in the backlog)"
                    );
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Under the global cap (this connection, held meanwhile, is at most one over
        // it: nothing more is accepted until there is room).
        let permit = tokio::select! {
            p = tracker.room() => p,
            _ = &mut shutdown => break,
        };
        let Some(slot) = tracker.admit(peer.ip()) else {
            // Every connection in the way is serving a request: this one waits for
            // nothing, it is closed at once.
            tracker.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection refused: the connection caps are reached");
            drop(tcp);
            continue;
        };
        tokio::spawn(serve_connection(tcp, peer, site.clone(), slot, permit));
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    site: Site,
    slot: Slot,
    // Held until the socket is closed (at the end of this function).
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Small messages (a task to an agent, an Ack) must leave at once: with Nagle's
    // algorithm a second small write waits for the peer's delayed ACK (~40 ms).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {e}");
    }
    let deadline = slot.tracker.limits.header_read_timeout;
    match &site.tls {
        None => serve_http(tcp, peer, site.app, slot, site.host_id).await,
        Some(tls) => {
            // A TLS connection opens with a handshake record (0x16); anything else is
            // a plain HTTP client at the TLS port: it gets a document that says so.
            let mut first = [0u8; 1];
            match tokio::time::timeout(deadline, tcp.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == 0x16 => {}
                Ok(Ok(1)) => return refuse_plain_http(tcp, &site.host_id).await,
                _ => return,
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(stream, peer, site.app, slot, site.host_id).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Answers a plain HTTP request sent to the TLS port with the vendor's error for it
/// (`InvalidProtocol.NeedSsl`, 404: "Your request is denied as lack of ssl protect.",
/// in the vendor's OpenAPI error table, help.aliyun.com/document_detail/434846), then
/// closes.
async fn refuse_plain_http(mut tcp: TcpStream, host_id: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read what came of the request first, so that closing does not reset it.
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
    let _ = tcp.write_all(&plain_http_refusal(host_id)).await;
    let _ = tcp.shutdown().await;
}

/// The answer to plain HTTP at the TLS port.
pub fn plain_http_refusal(host_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "RequestId": oca_domain::ids::new_request_id(),
        "HostId": host_id,
        "Code": "InvalidProtocol.NeedSsl",
        "Message": "Your request is denied as lack of ssl protect. This server takes HTTPS only: use https://.",
    })
    .to_string();
    format!(
        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json;charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends or is evicted.
async fn serve_http<I>(io: I, peer: SocketAddr, app: Router, slot: Slot, host_id: String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = slot.tracker.limits.clone();
    let io = TokioIo::new(ErrorDocIo::new(io, host_id));
    let slot = Arc::new(slot);
    let service_slot = slot.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = Busy::new(&service_slot);
        // What `into_make_service_with_connect_info` would give handlers.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut draining = slot.tracker.draining.subscribe();
    let mut finishing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                break;
            }
            _ = slot.conn.evict.notified() => {
                tracing::debug!(%peer, "connection closed to make room");
                break;
            }
            _ = draining.wait_for(|d| *d), if !finishing => {
                // The server stops: the request under way, if any, is answered; then
                // the connection closes.
                conn.as_mut().graceful_shutdown();
                finishing = true;
            }
        }
    }
}

// -------------------------------------------------------------------------------------
// Error documents for what hyper refuses by itself
// -------------------------------------------------------------------------------------

/// A connection's I/O that turns the bare answer hyper writes when it cannot parse a
/// request (`HTTP/1.1 431`, `400`, `414` with an empty body) into the API's error
/// document. Every answer of the application has a body, so an empty 4xx can only be
/// hyper's own; hyper closes the connection after it.
pub struct ErrorDocIo<T> {
    inner: T,
    host_id: String,
    /// A replacement being written: (bytes, written so far, length hyper asked for).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> ErrorDocIo<T> {
    pub fn new(inner: T, host_id: String) -> Self {
        ErrorDocIo {
            inner,
            host_id,
            pending: None,
        }
    }
}

/// If `head` is hyper's bare refusal, the status it carries.
fn bare_refusal(buf: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(buf.get(..buf.len().min(512))?).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let head_end = text.find("\r\n\r\n")?;
    let head = text[..head_end].to_ascii_lowercase();
    // The whole (empty-bodied) answer is in this one write.
    (head.contains("\r\ncontent-length: 0") && buf.len() == head_end + 4).then_some(status)
}

/// The error document that replaces hyper's bare refusal with `status`.
pub fn refusal_document(status: u16, host_id: &str) -> Vec<u8> {
    // Codes from the vendor's API Gateway error table (the family of I413RL used for
    // bodies): I413UL "Request URL too Large"; I400HD "Invalid Header"; I400RU
    // "Invalid Request Uri".
    let (code, message) = match status {
        431 => (
            "I413UL",
            "Request URL too Large: the request line and headers are over the server's limit; send large parameters in a form body (POST).",
        ),
        414 => (
            "I413UL",
            "Request URL too Large: the request line is over the server's limit.",
        ),
        _ => (
            "I400HD",
            "Invalid Header: the request is not valid HTTP/1.1.",
        ),
    };
    let body = serde_json::json!({
        "RequestId": oca_domain::ids::new_request_id(),
        "HostId": host_id,
        "Code": code,
        "Message": message,
    })
    .to_string();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json;charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<T: AsyncRead + Unpin> AsyncRead for ErrorDocIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ErrorDocIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match bare_refusal(buf) {
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
                Some(status) => {
                    this.pending = Some((refusal_document(status, &this.host_id), 0, buf.len()));
                }
            }
        }
        // Write the whole replacement before telling hyper its bytes are gone.
        let (doc, written, asked) = this.pending.as_mut().expect("set above");
        while *written < doc.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &doc[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let asked = *asked;
        this.pending = None;
        Poll::Ready(Ok(asked))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A vectored write is the head and the body of an answer with a body: never
        // a bare refusal, unless it is all in the first slice.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if self.pending.is_some() || bare_refusal(first).is_some() {
                return self.poll_write(cx, first);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_refusals_are_recognised() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        assert_eq!(bare_refusal(bare), Some(431));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(bare_refusal(bad), Some(400));
        // Answers with a body, and successes, are left alone.
        let doc = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"Code\":\"x\"}";
        assert_eq!(bare_refusal(doc), None);
        let head_only = b"HTTP/1.1 404 Not Found\r\ncontent-length: 120\r\n\r\n";
        assert_eq!(bare_refusal(head_only), None);
        assert_eq!(
            bare_refusal(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            bare_refusal(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            None
        );
    }

    #[test]
    fn refusal_documents_are_the_apis() {
        let doc = String::from_utf8(refusal_document(431, "oca")).unwrap();
        let (head, body) = doc.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["Code"], "I413UL");
        assert!(v["RequestId"].as_str().is_some_and(|r| !r.is_empty()));
        assert_eq!(v["HostId"], "oca");
    }

    #[test]
    fn addresses_are_counted_by_host() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(IpKey::of(ip("10.0.0.1")), IpKey::of(ip("::ffff:10.0.0.1")));
        assert_ne!(IpKey::of(ip("10.0.0.1")), IpKey::of(ip("10.0.0.2")));
        assert_eq!(
            IpKey::of(ip("2001:db8::1")),
            IpKey::of(ip("2001:db8::ffff:1")),
            "one /64"
        );
        assert_ne!(
            IpKey::of(ip("2001:db8::1")),
            IpKey::of(ip("2001:db8:0:1::1"))
        );
    }

    fn limits(per_address: usize, total: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_per_address: per_address,
            max_connections: total,
            max_head_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_full_address_displaces_its_own_idlest_connection() {
        let t = Tracker::new(limits(2, 100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = t.admit(a).unwrap();
        let a2 = t.admit(a).unwrap();
        let b1 = t.admit(b).unwrap();
        // a1 serves a request; a2 is idle: the third connection of a displaces a2.
        let busy = Busy::new(&a1);
        let a3 = t.admit(a).unwrap();
        assert_eq!(t.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(t.connections(), 3);
        // With both of a's connections busy, a fourth is refused; b is untouched.
        let _busy3 = Busy::new(&a3);
        assert!(t.admit(a).is_none());
        assert!(t.admit(b).is_some());
        drop(busy);
        drop((a2, b1));
        assert!(t.admit(a).is_some(), "a1 is idle again");
    }

    #[tokio::test]
    async fn the_global_cap_displaces_the_idlest_of_all() {
        let t = Tracker::new(limits(10, 3));
        let ips: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut held = Vec::new();
        for ip in &ips[..3] {
            let permit = t.room().await;
            held.push((t.admit(*ip).unwrap(), permit));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The fourth: the idlest (the first) is told to close; its permit comes back
        // when its socket is dropped.
        let busy = Busy::new(&held[1].0);
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(t.evicted.load(Ordering::Relaxed), 1);
        assert!(
            !waiting.is_finished(),
            "the evicted socket is not closed yet"
        );
        drop(held.remove(0));
        let permit = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room once the evicted connection is gone")
            .unwrap();
        let _fourth = (t.admit(ips[3]).unwrap(), permit);
        assert_eq!(t.connections(), 3);
        drop(busy);
    }
}
