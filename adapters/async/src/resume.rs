//! A server stream through a [`Channel`] that survives its connection:
//! when the server stamps resume cursors (PROTOCOL.md 5.6) and the stream
//! is cut by a lost or drained connection, it is opened again on the next
//! connection from the last cursor received, and the application's
//! `message()` loop goes on.

use std::time::Instant;

use bytes::Bytes;
use zrpc_core::{CURSOR_KEY, Code, Metadata, Status};

use crate::channel::{Channel, backoff, jittered};
use crate::client::Call;
use crate::conn::now;
use crate::options::CallOptions;
use crate::runtime::Runtime;

/// A server-streaming call made through a [`Channel`]; see
/// [`Channel::server_streaming`].
///
/// It is resumed when it fails with `UNAVAILABLE` (its connection was lost,
/// or the server drained it) and it has a resume point: the server stamped
/// a cursor on the last message received, or, before any message, on the
/// response headers. The call is opened again with the same method,
/// request and headers, plus the cursor (metadata key
/// [`zrpc_core::CURSOR_KEY`]); the server continues after that message.
/// Without a resume point (a server that stamps none, or a message without
/// one) the error is the application's, as with [`Call`].
pub struct ServerStream<R: Runtime> {
    channel: Channel<R>,
    method: String,
    request: Bytes,
    opts: CallOptions,
    deadline: Option<Instant>,
    call: Call,
    /// The current call delivered a message: the stream made progress, so
    /// the count of resumes in a row starts again.
    answered: bool,
    /// The cursor the current call was opened with (`None` for the first).
    opened_at: Option<Bytes>,
    /// Resumes since the server last answered.
    in_a_row: u32,
    /// Resumes over the stream's life.
    resumes: u32,
}

impl<R: Runtime> ServerStream<R> {
    pub(crate) fn new(
        channel: Channel<R>,
        method: &str,
        request: Bytes,
        opts: CallOptions,
        deadline: Option<Instant>,
        call: Call,
    ) -> Self {
        Self {
            channel,
            method: method.to_owned(),
            request,
            opts,
            deadline,
            call,
            answered: false,
            opened_at: None,
            in_a_row: 0,
            resumes: 0,
        }
    }

    /// The next response message; `Ok(None)` after the last one of a call
    /// that ended OK; `Err(status)` for a call that failed and could not be
    /// resumed (no resume point, another code, the deadline, or
    /// [`ChannelConfig::max_resumes`](crate::ChannelConfig::max_resumes)
    /// resumes in a row without an answer: then the last error).
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            let status = match self.call.message().await {
                Ok(Some(m)) => {
                    self.answered = true;
                    return Ok(Some(m));
                }
                Ok(None) => return Ok(None),
                Err(status) => status,
            };
            self.resume(status).await?;
        }
    }

    /// The current call's response headers (empty if the server sent
    /// none), once known.
    pub async fn headers(&mut self) -> Metadata {
        self.call.headers().await
    }

    /// How many times the stream was opened again.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Where the stream would start again now (see
    /// [`Call::resume_cursor`]).
    pub fn resume_cursor(&self) -> Option<Bytes> {
        self.call.resume_cursor()
    }

    /// Opens the call again after `status`, or gives `status` back.
    async fn resume(&mut self, status: Status) -> Result<(), Status> {
        if status.code() != Code::Unavailable {
            return Err(status);
        }
        // A call that received nothing stands where it was opened.
        let cursor = match self.answered || self.call.has_headers() {
            true => self.call.resume_cursor(),
            false => self.opened_at.clone(),
        };
        let Some(cursor) = cursor else {
            return Err(status);
        };
        // Only a message is progress: a server that answers each resume
        // with headers and then fails still meets the bound.
        if self.answered {
            self.in_a_row = 0;
        }
        let config = self.channel.config();
        if self.in_a_row >= config.max_resumes {
            return Err(status);
        }
        if self.in_a_row > 0 {
            let wait = jittered(backoff(
                config.initial_backoff,
                config.max_backoff,
                self.in_a_row,
            ));
            let wake = now() + wait;
            if self.deadline.is_some_and(|d| wake >= d) {
                return Err(status);
            }
            self.channel.sleep_until(wake).await;
        }
        self.in_a_row += 1;
        self.resumes += 1;
        let mut opts = self.opts.clone();
        opts.metadata.remove(CURSOR_KEY);
        opts.metadata
            .insert(CURSOR_KEY, cursor.clone())
            .map_err(|e| Status::internal(e.to_string()))?;
        let call = match self
            .channel
            .open_stream(&self.method, &self.request, &opts, self.deadline)
            .await
        {
            Ok(call) => call,
            // No connection within the wait: the stream's last error.
            Err(e) if e.code() == Code::Unavailable => return Err(status),
            Err(e) => return Err(e),
        };
        self.call = call;
        self.answered = false;
        self.opened_at = Some(cursor);
        Ok(())
    }
}
