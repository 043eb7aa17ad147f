//! One call served over HTTP: what its handler's context, request stream
//! and response sink reach instead of a zrpc connection. The handler task
//! and the response body meet in [`HttpCall`]: responses wait in a queue
//! bounded in bytes, which the body hands to hyper as HTTP/2 (or the
//! socket) takes them, so a client that stops reading stops the handler's
//! `send`; dropping the body (a reset stream, a lost connection) ends the
//! call, which cancels the handler.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use std::future::Future;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use zrpc_core::{Metadata, Status};

use super::envelope::{self, DecodeError, Decoder};
use super::json::JsonCodec;
use super::protocol::Protocol;
use std::sync::atomic::Ordering;

use crate::conn::{Identity, RecvBudget};
use crate::signal::lock;

/// Response bytes a handler may have queued before its `send` waits for the
/// client to take them (one message may always be queued, whatever its
/// size: the method's message limit bounds it).
pub(crate) const SEND_QUEUE_BYTES: usize = 64 * 1024;

/// The state a call's handler and its response body share.
pub(crate) struct HttpCall {
    st: Mutex<CallState>,
    pub(crate) protocol: Protocol,
    /// The client accepts gzip: large response messages go compressed.
    pub(crate) gzip: bool,
    /// The JSON codec, when the call's messages are JSON.
    pub(crate) json: Option<Arc<JsonCodec>>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) identity: Option<Identity>,
}

#[derive(Default)]
struct CallState {
    /// Response headers the handler set (taken when the head goes out).
    headers: Option<Metadata>,
    /// The handler sent its headers, a message, or ended.
    head_ready: bool,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// The call's end: the handler's status and trailers, or the end the
    /// transport imposed (deadline, client gone).
    end: Option<(Status, Metadata)>,
    /// The body wrote the end (or was dropped): nothing more goes out.
    end_taken: bool,
    head_waker: Option<Waker>,
    body_waker: Option<Waker>,
    send_waker: Option<Waker>,
    end_wakers: Vec<Waker>,
}

impl CallState {
    fn wake_all(&mut self) {
        for w in [
            self.head_waker.take(),
            self.body_waker.take(),
            self.send_waker.take(),
        ]
        .into_iter()
        .flatten()
        .chain(self.end_wakers.drain(..))
        {
            w.wake();
        }
    }
}

/// What the service waits for before it answers the request's head.
pub(crate) enum Head {
    /// Headers (or a first message): the response streams from here.
    Streaming(Metadata),
    /// The call ended before its head went out: status, headers,
    /// trailers, and the messages queued meanwhile (a unary call's answer).
    Ended(Status, Metadata, Metadata, Vec<Bytes>),
}

impl HttpCall {
    pub(crate) fn new(
        protocol: Protocol,
        gzip: bool,
        json: Option<Arc<JsonCodec>>,
        peer: Option<SocketAddr>,
        identity: Option<Identity>,
    ) -> Arc<Self> {
        Arc::new(Self {
            st: Mutex::new(CallState::default()),
            protocol,
            gzip,
            json,
            peer,
            identity,
        })
    }

    /// The handler flushes its headers (before its first message, or at
    /// its end).
    pub(crate) fn flush_headers(&self, headers: Option<Metadata>) {
        let mut st = lock(&self.st);
        if st.head_ready {
            return;
        }
        st.headers = headers;
        st.head_ready = true;
        if let Some(w) = st.head_waker.take() {
            w.wake();
        }
    }

    /// Queues a response message, waiting while the queue is full.
    pub(crate) fn poll_send(
        &self,
        msg: &mut Option<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Status>> {
        let mut st = lock(&self.st);
        if let Some((status, _)) = &st.end {
            return Poll::Ready(Err(if status.is_ok() {
                Status::failed_precondition("the call has ended")
            } else {
                status.clone()
            }));
        }
        let Some(mut m) = msg.take() else {
            return Poll::Ready(Ok(()));
        };
        // The bound is checked before the JSON conversion: a message that
        // waits stays the handler's (binary) message, converted once when
        // it is queued.
        if !st.out.is_empty() && st.out_bytes + m.len() > SEND_QUEUE_BYTES {
            *msg = Some(m);
            st.send_waker = Some(cx.waker().clone());
            crate::metrics::send_stalled();
            return Poll::Pending;
        }
        if let Some(json) = &self.json {
            m = json.response(&m)?;
        }
        st.out_bytes += m.len();
        st.out.push_back(m);
        st.head_ready = true;
        for w in [st.body_waker.take(), st.head_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// Ends the call (the first end wins: a handler's status after a
    /// deadline fired is dropped).
    pub(crate) fn finish(&self, status: Status, trailers: Metadata) {
        let mut st = lock(&self.st);
        if st.end.is_none() {
            st.end = Some((status, trailers));
            st.head_ready = true;
        }
        st.wake_all();
    }

    /// Resolves once the call has ended, with its status.
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut st = lock(&self.st);
        match &st.end {
            Some((s, _)) => Poll::Ready(s.clone()),
            None => {
                if !st.end_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.end_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        lock(&self.st).end.is_some()
    }

    /// Waits until the response head can be written.
    pub(crate) fn poll_head(&self, cx: &mut Context<'_>) -> Poll<Head> {
        let mut st = lock(&self.st);
        if !st.head_ready {
            st.head_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let headers = st.headers.take().unwrap_or_default();
        if st.end.is_some() && self.protocol.whole_answer(st.out.is_empty()) {
            let (status, trailers) = st
                .end
                .clone()
                .unwrap_or_else(|| (Status::ok(), Metadata::new()));
            st.end_taken = true;
            let out: Vec<Bytes> = st.out.drain(..).collect();
            st.out_bytes = 0;
            return Poll::Ready(Head::Ended(status, headers, trailers, out));
        }
        Poll::Ready(Head::Streaming(headers))
    }

    /// The client is gone (reset, connection lost) or the response was
    /// never answered: the call ends `CANCELLED` unless it already ended.
    pub(crate) fn abandon(&self) {
        let mut st = lock(&self.st);
        st.end_taken = true;
        if st.end.is_none() {
            st.end = Some((Status::cancelled("the client went away"), Metadata::new()));
        }
        st.out.clear();
        st.wake_all();
    }
}

/// A call's handler (with its deadline) as it runs: polled by the request's
/// service future until the head goes out, then by the response body, so
/// a call costs no task of its own.
pub(crate) type HandlerRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Spawns a handler left behind when its request or body is dropped, so it
/// sees its call end and finishes (its metrics and log line included).
pub(crate) type Spawner = Arc<dyn Fn(HandlerRun) + Send + Sync>;

/// A handler run, with what to do with it if it is dropped unfinished.
pub(crate) struct Running {
    pub(crate) call: Arc<HttpCall>,
    run: Option<HandlerRun>,
    spawn: Spawner,
}

impl Running {
    pub(crate) fn new(call: Arc<HttpCall>, run: HandlerRun, spawn: Spawner) -> Self {
        Self {
            call,
            run: Some(run),
            spawn,
        }
    }

    /// Polls the handler, if it still runs.
    fn poll_run(&mut self, cx: &mut Context<'_>) {
        if let Some(run) = &mut self.run
            && run.as_mut().poll(cx).is_ready()
        {
            self.run = None;
        }
    }

    /// Runs the handler until the response head can be written.
    pub(crate) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Head> {
        self.poll_run(cx);
        self.call.poll_head(cx)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            self.call.abandon();
            (self.spawn)(run);
        }
    }
}

/// The response body of a streaming answer: queued messages, then the end
/// in the protocol's form.
pub(crate) struct CallBody {
    running: Running,
    done: bool,
}

impl CallBody {
    pub(crate) fn new(running: Running) -> Self {
        Self {
            running,
            done: false,
        }
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        if !self.done {
            self.running.call.abandon();
        }
    }
}

/// Bytes of queued messages one body frame carries at most (more messages
/// than that wait for the next frame; one larger message goes alone).
const FRAME_BYTES: usize = 64 * 1024;

/// A response body: nothing, one buffer, or a call's stream.
pub(crate) enum Body {
    Empty,
    Full(Option<Bytes>),
    Call(CallBody),
}

impl Body {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        Body::Full(Some(b.into()))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Call(body) => body.poll(cx).map(|f| f.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Call(b) => b.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Call(_) => SizeHint::default(),
        }
    }
}

impl CallBody {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.running.poll_run(cx);
        let call = &self.running.call;
        let mut st = lock(&call.st);
        if !st.out.is_empty() {
            // Every message queued meanwhile, in one frame.
            let mut take = 0;
            let mut bytes = 0;
            for m in &st.out {
                if take > 0 && bytes + m.len() > FRAME_BYTES {
                    break;
                }
                take += 1;
                bytes += m.len() + envelope::PREFIX;
            }
            let frame = if take == 1 {
                let m = st.out.pop_front().unwrap_or_default();
                st.out_bytes -= m.len();
                call.protocol.message(&m, call.gzip)
            } else {
                let mut buf = BytesMut::with_capacity(bytes);
                let st = &mut *st;
                for m in st.out.drain(..take) {
                    st.out_bytes -= m.len();
                    call.protocol.write_message(&m, call.gzip, &mut buf);
                }
                buf.freeze()
            };
            if let Some(w) = st.send_waker.take() {
                w.wake();
            }
            drop(st);
            return Poll::Ready(Some(Frame::data(frame)));
        }
        if let Some((status, trailers)) = &st.end {
            let frame = call.protocol.end_frame(status, trailers);
            st.end_taken = true;
            drop(st);
            self.done = true;
            return Poll::Ready(Some(frame));
        }
        st.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A call's request messages, read from the request body as the handler
/// asks for them (so HTTP/2 flow control holds back a client the handler
/// does not keep up with). For a method of one request, the body is read
/// to its end before that request is handed over: a second message is an
/// error, and the connection is left clean for its next request.
pub(crate) struct HttpRequests {
    body: super::InBody,
    decoder: Decoder,
    json: Option<Arc<JsonCodec>>,
    /// The server-wide receive budget, and what this body's buffer counts
    /// in it now.
    budget: Arc<RecvBudget>,
    counted: usize,
    eof: bool,
    /// One request expected: `Some(first)` once it came, while the body is
    /// read to its end.
    single: Option<Option<Bytes>>,
}

impl HttpRequests {
    pub(crate) fn new(
        body: super::InBody,
        decoder: Decoder,
        json: Option<Arc<JsonCodec>>,
        single: bool,
        budget: Arc<RecvBudget>,
    ) -> Self {
        Self {
            body,
            decoder,
            json,
            budget,
            counted: 0,
            eof: false,
            single: single.then_some(None),
        }
    }

    pub(crate) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            let next = match (self.poll_next(cx), &self.json) {
                (Poll::Ready(Ok(Some(m))), Some(json)) => Poll::Ready(json.request(&m).map(Some)),
                (other, _) => other,
            };
            match next {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(next)) => match (&mut self.single, next) {
                    (None, next) => return Poll::Ready(Ok(next)),
                    (Some(first @ None), Some(m)) => *first = Some(m),
                    (Some(Some(_)), Some(_)) => {
                        return Poll::Ready(Err(Status::internal(
                            "more than one request message for a method that takes one",
                        )));
                    }
                    (Some(first), None) => return Poll::Ready(Ok(first.take())),
                },
            }
        }
    }

    /// Brings this body's share of the server-wide budget up to date;
    /// past the bound, the call is refused (its buffer dropped).
    fn count(&mut self) {
        let now = self.decoder.buffered();
        if now > self.counted {
            self.budget
                .used
                .fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            self.budget
                .used
                .fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
        if now > 0 && self.budget.exceeded() {
            self.decoder.refuse(DecodeError::ServerFull);
            self.budget.used.fetch_sub(now, Ordering::Relaxed);
            self.counted = 0;
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let r = self.poll_decode(cx);
        self.count();
        r
    }

    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            match self.decoder.next() {
                Ok(Some(m)) => return Poll::Ready(Ok(Some(m))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e.status())),
            }
            if self.eof {
                return Poll::Ready(self.decoder.finish().map_err(|e| e.status()));
            }
            match futures_lite::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if let Err(e) = self.decoder.push(data) {
                            return Poll::Ready(Err(e.status()));
                        }
                        self.count();
                    }
                }
                Some(Err(e)) => {
                    return Poll::Ready(Err(Status::cancelled(format!(
                        "the request body failed: {e}"
                    ))));
                }
                None => self.eof = true,
            }
        }
    }
}

impl Drop for HttpRequests {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

impl From<DecodeError> for Status {
    fn from(e: DecodeError) -> Self {
        e.status()
    }
}
