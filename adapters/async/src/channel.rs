//! A client that outlives its connections: [`Channel`] keeps one connection
//! to a URL open for the application, opens the next one when the server
//! drains (GOAWAY) or the connection is lost, with exponential backoff and
//! jitter between failed attempts, and sends calls again where that is safe.
//!
//! What is sent again:
//! - a call that never left this side (its connection was already closing),
//!   and a call the server announced it never processed (its id above the
//!   GOAWAY's last accepted one, [`Status::is_not_processed`]): always, on the
//!   next connection, without counting as an attempt;
//! - a unary call that was in progress when its connection was lost: only
//!   under the caller's [`RetryPolicy`] (`CallOptions::retry`), for methods
//!   that are safe to repeat.
//!
//! A call waits for a connection while the channel reconnects, bounded by
//! its deadline, or by [`ChannelConfig::connect_wait`] without one.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use futures_lite::FutureExt;
use zrpc_core::{CallKind, Code, Status};

use crate::options::CallOptions;
use crate::outgoing::{ClientInterceptor, ClientInterceptors};

use crate::client::{Call, Client, Failure};
use crate::conn::now;
use crate::connect::{ClientConfig, connect};
pub use crate::resume::ServerStream;
use crate::runtime::Runtime;
use crate::signal::lock;
use crate::{Error, socket_addr_of};

/// How a [`Channel`] connects and reconnects.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Settings of each connection (limits, headers, TLS, connect timeout).
    pub client: ClientConfig,
    /// Wait after the first failed connect; it doubles with each further
    /// failure, with random jitter (0.5× to 1×). Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait between two connects. Default 5 s.
    pub max_backoff: Duration,
    /// Longest time a call without a deadline waits for a connection;
    /// then it fails with `UNAVAILABLE` naming the last connect error.
    /// Default 30 s.
    pub connect_wait: Duration,
    /// How many times one call is sent again because the server never
    /// processed it (each drain of a server costs one). Default 8.
    pub max_resends: u32,
    /// How many times in a row a resumable server stream is opened again
    /// (PROTOCOL.md 5.6) without a message in between; then the stream
    /// fails with the last error. The first resume goes at once, the next
    /// ones after the backoff. Default 8.
    pub max_resumes: u32,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_wait: Duration::from_secs(30),
            max_resends: 8,
            max_resumes: 8,
        }
    }
}

/// Where the channel's connection stands.
enum State {
    /// No connection; the next call opens one.
    Idle { failures: u32 },
    /// A connect is under way; its task sets the next state.
    Connecting,
    /// Calls go here until it drains or closes.
    Ready(Client),
    /// The last `failures` connects failed; none before `until`.
    Backoff {
        failures: u32,
        until: Instant,
        error: String,
    },
}

struct Inner<R> {
    url: String,
    config: ChannelConfig,
    rt: R,
    state: Mutex<State>,
    /// Notified on every change of `state`.
    changed: Event,
}

/// A client that reconnects: cheap to clone (clones share the connection),
/// calls multiplexed over the current connection as with [`Client`].
///
/// ```no_run
/// # async fn demo<R: zrpc_async::Runtime>(rt: R) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use zrpc_async::{Bytes, CallOptions, Channel, ChannelConfig, RetryPolicy};
///
/// let channel = Channel::new("ws://127.0.0.1:8060/", ChannelConfig::default(), rt)?;
/// // Sent again if the server drains before processing it; fails with
/// // UNAVAILABLE if the connection is lost while the server runs it.
/// let created = channel
///     .unary("people.People/CreatePerson", Bytes::new(), CallOptions::default())
///     .await?;
/// // Safe to repeat: sent again (at most 3 attempts) if the connection is lost.
/// let opts = CallOptions::default()
///     .with_timeout(Duration::from_secs(5))
///     .with_retry(RetryPolicy::idempotent());
/// let found = channel.unary("people.People/GetPerson", created, opts).await?;
/// # let _ = found; Ok(()) }
/// ```
pub struct Channel<R: Runtime> {
    inner: Arc<Inner<R>>,
    /// What runs around each call (see [`Channel::with_interceptor`]).
    interceptors: Option<ClientInterceptors>,
}

impl<R: Runtime> Clone for Channel<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            interceptors: self.interceptors.clone(),
        }
    }
}

impl<R: Runtime> Channel<R> {
    /// A channel to `url` (`ws://` or `wss://`). It connects when the first
    /// call needs it; an invalid URL is an error at once.
    pub fn new(url: &str, config: ChannelConfig, rt: R) -> Result<Self, Error> {
        socket_addr_of(url)?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                config,
                rt,
                state: Mutex::new(State::Idle { failures: 0 }),
                changed: Event::new(),
            }),
            interceptors: None,
        })
    }

    /// This channel with `interceptor` around each call attempt, after the
    /// ones added before (see [`ClientInterceptor`]); a call sent again
    /// on another connection runs them again. Other clones keep theirs.
    pub fn with_interceptor(mut self, interceptor: impl ClientInterceptor) -> Self {
        let list = self.interceptors.get_or_insert_with(Default::default);
        Arc::make_mut(list).push(Arc::new(interceptor));
        self
    }

    /// The current connection, waiting (at most
    /// [`ChannelConfig::connect_wait`]) while the channel connects. For
    /// calls the channel has no method of its own for (client streaming,
    /// bidi); such a call fails with the connection it was opened on.
    pub async fn client(&self) -> Result<Client, Status> {
        self.intercepted(None).await
    }

    /// The current connection with this channel's interceptors.
    async fn intercepted(&self, deadline: Option<Instant>) -> Result<Client, Status> {
        let client = self.connection(deadline).await?;
        Ok(client.with_interceptors(self.interceptors.clone()))
    }

    /// A unary call: sent again on the next connection when the server
    /// never processed it, and after a lost connection under
    /// `opts.retry`. `opts.timeout` bounds the whole call, waits and
    /// attempts included.
    pub async fn unary(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Status> {
        self.attempts(&opts, |client, attempt| {
            let request = request.clone();
            async move { client.unary_attempt(method, request, attempt).await }
        })
        .await
    }

    /// A server-streaming call, opened on the next connection when the
    /// current one was already closing or the server never processed it.
    /// When the server stamps resume cursors (PROTOCOL.md 5.6) and the
    /// stream is cut by a lost or drained connection (`UNAVAILABLE`), the
    /// [`ServerStream`] opens it again on the next connection from the last
    /// cursor received, and its `message()` loop just goes on: no gap, no
    /// duplicate (at most [`ChannelConfig::max_resumes`] times in a row).
    pub async fn server_streaming(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<ServerStream<R>, Status> {
        let deadline = deadline_of(&opts);
        let call = self.open_stream(method, &request, &opts, deadline).await?;
        Ok(ServerStream::new(
            self.clone(),
            method,
            request,
            opts,
            deadline,
            call,
        ))
    }

    /// Opens one server-streaming call (the first, or a resume).
    pub(crate) async fn open_stream(
        &self,
        method: &str,
        request: &Bytes,
        opts: &CallOptions,
        deadline: Option<Instant>,
    ) -> Result<Call, Status> {
        self.attempts_until(opts, deadline, |client, attempt| {
            let request = request.clone();
            async move {
                client
                    .server_streaming_attempt(method, request, attempt)
                    .await
            }
        })
        .await
    }

    /// The channel's configuration.
    pub(crate) fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    /// Sleeps until `wake` on the channel's runtime.
    pub(crate) async fn sleep_until(&self, wake: Instant) {
        self.inner.rt.sleep_until(wake).await
    }

    /// Opens a call of any kind on the current connection (see
    /// [`Client::call`]); opened on the next connection when the current
    /// one was already closing.
    pub async fn call(
        &self,
        method: &str,
        kind: CallKind,
        opts: CallOptions,
    ) -> Result<Call, Status> {
        self.attempts(&opts, |client, attempt| async move {
            client.start(method, kind, attempt, None).await
        })
        .await
    }

    /// Runs `attempt` on the current connection until it succeeds or
    /// [`Channel::again`] gives up, each attempt with the time left of the
    /// call's deadline.
    async fn attempts<T, F, Fut>(&self, opts: &CallOptions, attempt: F) -> Result<T, Status>
    where
        F: FnMut(Client, CallOptions) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        self.attempts_until(opts, deadline_of(opts), attempt).await
    }

    /// [`attempts`](Self::attempts) within an absolute `deadline`.
    async fn attempts_until<T, F, Fut>(
        &self,
        opts: &CallOptions,
        deadline: Option<Instant>,
        mut attempt: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Client, CallOptions) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut tries = Tries::default();
        loop {
            let client = self.intercepted(deadline).await?;
            match attempt(client, attempt_options(opts, deadline)?).await {
                Ok(done) => return Ok(done),
                Err(failure) => self.again(failure, opts, deadline, &mut tries).await?,
            }
        }
    }

    /// Decides whether a failed attempt goes again: `Ok` after any wait the
    /// policy asks for, `Err` with the status the application gets.
    async fn again(
        &self,
        failure: Failure,
        opts: &CallOptions,
        deadline: Option<Instant>,
        tries: &mut Tries,
    ) -> Result<(), Status> {
        let status = match failure {
            Failure::Refused(st) => return Err(st),
            Failure::NotSent(st) => st,
            Failure::Ended(st) if st.is_not_processed() => st,
            Failure::Ended(st) => {
                let Some(policy) = opts
                    .retry
                    .as_ref()
                    .filter(|p| p.allows(tries.attempts, &st))
                else {
                    return Err(st);
                };
                tries.attempts += 1;
                let wait = jittered(policy.backoff(tries.attempts));
                let wake = now() + wait;
                if deadline.is_some_and(|d| wake >= d) {
                    return Err(st);
                }
                self.inner.rt.sleep_until(wake).await;
                return Ok(());
            }
        };
        if tries.resends >= self.inner.config.max_resends {
            return Err(status);
        }
        tries.resends += 1;
        Ok(())
    }

    /// The current connection, connecting (or waiting for a connect under
    /// way, or for the backoff to pass) until `deadline` (the call's), or
    /// for [`ChannelConfig::connect_wait`] without one.
    async fn connection(&self, deadline: Option<Instant>) -> Result<Client, Status> {
        let (limit, expired) = match deadline {
            Some(d) => (d, Code::DeadlineExceeded),
            None => (now() + self.inner.config.connect_wait, Code::Unavailable),
        };
        loop {
            let listener;
            let mut wake = limit;
            let last_error;
            {
                let mut st = lock(&self.inner.state);
                if let State::Ready(c) = &*st {
                    if !c.is_draining() && !c.is_closed() {
                        return Ok(c.clone());
                    }
                    *st = State::Idle { failures: 0 };
                }
                match &*st {
                    State::Idle { failures } => {
                        let failures = *failures;
                        *st = State::Connecting;
                        self.spawn_connect(failures);
                    }
                    State::Backoff {
                        failures, until, ..
                    } if *until <= now() => {
                        let failures = *failures;
                        *st = State::Connecting;
                        self.spawn_connect(failures);
                    }
                    State::Backoff { until, .. } => wake = wake.min(*until),
                    State::Connecting | State::Ready(_) => {}
                }
                last_error = match &*st {
                    State::Backoff { error, .. } => Some(error.clone()),
                    _ => None,
                };
                // Listening under the lock: no change can slip between the
                // look at the state and the wait.
                listener = self.inner.changed.listen();
            }
            if now() >= limit {
                let why = last_error.map_or_else(String::new, |e| format!(": {e}"));
                return Err(Status::new(
                    expired,
                    format!("no connection to {}{why}", self.inner.url),
                ));
            }
            let rt = self.inner.rt.clone();
            listener.or(rt.sleep_until(wake)).await;
        }
    }

    /// Starts one connect in the background; it moves the state on and
    /// wakes the waiting calls. The task holds the channel weakly: a
    /// channel dropped meanwhile closes the new connection.
    fn spawn_connect(&self, failures: u32) {
        let weak = Arc::downgrade(&self.inner);
        let url = self.inner.url.clone();
        let config = self.inner.config.client.clone();
        let rt = self.inner.rt.clone();
        self.inner.rt.spawn(async move {
            let result = connect(&url, config, rt).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let mut st = lock(&inner.state);
            match result {
                Ok(client) => {
                    tracing::debug!(target: "zrpc::channel", %url, "connected");
                    inner.rt.spawn(watch(weak, client.weak()));
                    *st = State::Ready(client);
                }
                Err(e) => {
                    let failures = failures.saturating_add(1);
                    let wait = jittered(backoff(
                        inner.config.initial_backoff,
                        inner.config.max_backoff,
                        failures,
                    ));
                    tracing::debug!(target: "zrpc::channel", %url, error = %e, ?wait, "connect failed");
                    *st = State::Backoff {
                        failures,
                        until: now() + wait,
                        error: e.to_string(),
                    };
                }
            }
            drop(st);
            inner.changed.notify(usize::MAX);
        });
    }
}

/// Waits until `client`'s connection drains or closes, then opens the next
/// one at once (so new calls do not wait for it) unless the channel is gone
/// or has moved on.
async fn watch<R: Runtime>(channel: Weak<Inner<R>>, client: Client) {
    client.draining().await;
    let Some(inner) = channel.upgrade() else {
        return;
    };
    let mut st = lock(&inner.state);
    if matches!(&*st, State::Ready(c) if c.same_connection(&client)) {
        *st = State::Connecting;
        Channel {
            inner: inner.clone(),
            interceptors: None,
        }
        .spawn_connect(0);
    }
    drop(st);
    inner.changed.notify(usize::MAX);
}

/// Attempts and resends of one call so far.
struct Tries {
    /// Attempts counted against the retry policy (the first included).
    attempts: u32,
    /// Times sent again because the server never processed it.
    resends: u32,
}

impl Default for Tries {
    fn default() -> Self {
        Self {
            attempts: 1,
            resends: 0,
        }
    }
}

/// The call's absolute deadline (`None` without a timeout, or one too far
/// to represent).
pub(crate) fn deadline_of(opts: &CallOptions) -> Option<Instant> {
    opts.timeout.and_then(|t| now().checked_add(t))
}

/// The options of one attempt: the time left of the call's deadline.
fn attempt_options(opts: &CallOptions, deadline: Option<Instant>) -> Result<CallOptions, Status> {
    let mut attempt = opts.clone();
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(now());
        if left.is_zero() {
            return Err(Status::new(Code::DeadlineExceeded, "deadline exceeded"));
        }
        attempt.timeout = Some(left);
    }
    Ok(attempt)
}

/// `initial` doubled for each failure after the first, at most `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    initial.saturating_mul(1 << doublings).min(max)
}

/// `d` scaled by a random factor in [0.5, 1), so clients that lost the same
/// server do not come back in step.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::RetryPolicy;

    #[test]
    fn backoff_doubles_up_to_the_bound_and_jitter_stays_within_half() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(i, m, 1), Duration::from_millis(100));
        assert_eq!(backoff(i, m, 2), Duration::from_millis(200));
        assert_eq!(backoff(i, m, 4), Duration::from_millis(800));
        assert_eq!(backoff(i, m, 40), m);
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(1));
            assert!(j >= Duration::from_millis(500) && j < Duration::from_secs(1));
        }
        let p = RetryPolicy::idempotent();
        assert_eq!(p.backoff(2), Duration::from_millis(50));
        assert_eq!(p.backoff(3), Duration::from_millis(100));
        assert_eq!(p.backoff(30), Duration::from_secs(1));
        let unavailable = Status::new(Code::Unavailable, "lost");
        assert!(p.allows(1, &unavailable) && p.allows(2, &unavailable));
        assert!(!p.allows(3, &unavailable));
        assert!(!p.allows(1, &Status::new(Code::Internal, "bug")));
    }
}
