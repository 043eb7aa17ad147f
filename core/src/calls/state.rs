//! A call's life in one type: which end this side is, where the call is for
//! the application and the peer, what each direction may still carry, and
//! how many messages its kind allows. Every rule about what may happen next
//! on a call is one method here, used by both wire formats; the halves
//! ([`send`](super::send), [`recv`](super::recv)) keep credit, queues and
//! reassembly, and each transition that needs one of their checks takes it
//! as a step run between the rules and the change, so the order in which
//! faults are found is written once.

use crate::call::CallKind;
use crate::error::{ConnectionError, UserError};
use crate::status::{Code, Status};

use super::RecvFault;

/// Which end of the call this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// This side opened the call.
    Caller,
    /// The peer opened the call; this side answers it.
    Responder,
}

/// Where a call is in its life, as the connection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A caller's call whose OPEN is not written yet: the peer does not know
    /// it, so ending it tells the peer nothing.
    Unsent,
    /// Both sides know the call.
    Live,
    /// Ended for the application (a responder finished); only its queued
    /// frames (last messages, STATUS) remain to write.
    Finishing,
}

/// Where one direction of a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Nothing carried yet: response headers may still come first.
    Start,
    /// Headers or a message went this way (a caller's sending direction
    /// starts here: its OPEN carries the request headers).
    Open,
    /// No more messages this way: half-closed, or finished.
    Closed,
}

/// A call's state: its role, kind, phase, both directions and the counts
/// its kind's cardinality is checked against.
#[derive(Debug)]
pub(crate) struct CallState {
    role: Role,
    kind: CallKind,
    phase: Phase,
    send: Direction,
    recv: Direction,
    /// Messages this side was allowed to send.
    sent: u32,
    /// Whole messages received.
    received: u32,
    /// A responder that stamped a resume cursor: a drain ends the call at
    /// once, for the caller to resume it elsewhere.
    resumable: bool,
}

impl CallState {
    /// A call this side opens (its OPEN not yet written), or one the peer
    /// opened.
    pub(crate) fn new(role: Role, kind: CallKind) -> Self {
        let (phase, send) = match role {
            Role::Caller => (Phase::Unsent, Direction::Open),
            Role::Responder => (Phase::Live, Direction::Start),
        };
        Self {
            role,
            kind,
            phase,
            send,
            recv: Direction::Start,
            sent: 0,
            received: 0,
            resumable: false,
        }
    }

    /// A call that needs no OPEN on the wire (the legacy format's one
    /// call): the peer knows it from its first message.
    pub(crate) fn known(role: Role, kind: CallKind) -> Self {
        let mut s = Self::new(role, kind);
        s.phase = Phase::Live;
        s
    }

    #[inline]
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// True while the application still has the call (not finishing).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.phase != Phase::Finishing
    }

    /// True for a caller's call whose OPEN was not written: the peer does
    /// not know it.
    #[inline]
    pub(crate) fn is_unsent(&self) -> bool {
        self.phase == Phase::Unsent
    }

    /// Messages this side was allowed to send.
    #[inline]
    pub(crate) fn sent(&self) -> u32 {
        self.sent
    }

    /// True when this side may send only one message on the call.
    #[inline]
    fn single_send(&self) -> bool {
        match self.role {
            Role::Caller => self.kind.single_request(),
            Role::Responder => self.kind.single_response(),
        }
    }

    /// True when the peer may send only one message on the call.
    #[inline]
    fn single_recv(&self) -> bool {
        match self.role {
            Role::Caller => self.kind.single_response(),
            Role::Responder => self.kind.single_request(),
        }
    }

    /// The receive window a caller offers in its OPEN: one message when one
    /// response is due, else `configured`.
    pub(crate) fn first_window(&self, configured: u32) -> u32 {
        if self.single_recv() { 1 } else { configured }
    }

    /// True when consumed messages are granted back to the peer: the call
    /// is live, the peer may send more than one message, and has not
    /// half-closed.
    #[inline]
    pub(crate) fn grants_credit(&self) -> bool {
        self.is_live() && !self.single_recv() && self.recv != Direction::Closed
    }

    // ------------------------------------------------------------------
    // This side
    // ------------------------------------------------------------------

    /// The call's OPEN was written: the peer knows the call.
    #[inline]
    pub(crate) fn opened(&mut self) {
        if self.phase == Phase::Unsent {
            self.phase = Phase::Live;
        }
    }

    /// Response headers (responder), after `check` (the metadata bound).
    pub(crate) fn send_headers(
        &mut self,
        check: impl FnOnce() -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        if self.role != Role::Responder {
            return Err(UserError::NotResponder);
        }
        if self.send != Direction::Start {
            return Err(UserError::HeadersAlreadySent);
        }
        check()?;
        self.send = Direction::Open;
        Ok(())
    }

    /// One message, after `admit` (the message bound, the buffers and the
    /// peer's credit, which it takes).
    #[inline]
    pub(crate) fn send_message(
        &mut self,
        admit: impl FnOnce() -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        if self.send == Direction::Closed {
            return Err(UserError::SendClosed);
        }
        if self.single_send() && self.sent >= 1 {
            return Err(UserError::Cardinality);
        }
        admit()?;
        self.sent += 1;
        self.send = Direction::Open;
        Ok(())
    }

    /// A resume cursor on this side's next message: only a responder's
    /// messages on a server-streaming call carry one. Marks the call
    /// resumable.
    pub(crate) fn stamp_cursor(&mut self) -> Result<(), UserError> {
        if self.role != Role::Responder || self.kind != CallKind::ServerStreaming {
            return Err(UserError::NotResumable);
        }
        self.resumable = true;
        Ok(())
    }

    /// True for a responder's call that stamped a resume cursor (see
    /// [`stamp_cursor`](Self::stamp_cursor)) and is still live.
    #[inline]
    pub(crate) fn is_resumable(&self) -> bool {
        self.resumable && self.is_live()
    }

    /// The caller's half-close: no more requests.
    pub(crate) fn half_close(&mut self) -> Result<(), UserError> {
        if self.role != Role::Caller {
            return Err(UserError::NotCaller);
        }
        if self.send == Direction::Closed {
            return Err(UserError::SendClosed);
        }
        if self.single_send() && self.sent == 0 {
            return Err(UserError::Cardinality);
        }
        self.send = Direction::Closed;
        Ok(())
    }

    /// The responder's STATUS (`ok`: an OK status), after `check` (the
    /// metadata bound): the call ends for the application; its queued
    /// frames remain to write.
    pub(crate) fn finish(
        &mut self,
        ok: bool,
        check: impl FnOnce() -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        if self.role != Role::Responder {
            return Err(UserError::NotResponder);
        }
        if ok && self.single_send() && self.sent == 0 {
            return Err(UserError::Cardinality);
        }
        check()?;
        self.send = Direction::Closed;
        self.phase = Phase::Finishing;
        Ok(())
    }

    // ------------------------------------------------------------------
    // The peer
    // ------------------------------------------------------------------

    /// Response headers from the peer, after `check` (the metadata bound).
    pub(crate) fn recv_headers(
        &mut self,
        check: impl FnOnce() -> Result<(), ConnectionError>,
    ) -> Result<(), RecvFault> {
        if self.role != Role::Caller {
            return Err(RecvFault::protocol("HEADERS from the caller"));
        }
        check().map_err(RecvFault::Connection)?;
        if self.recv != Direction::Start {
            return Err(RecvFault::internal(
                "response headers after headers or a message",
            ));
        }
        self.recv = Direction::Open;
        Ok(())
    }

    /// A MESSAGE frame from the peer: `end` its END_STREAM flag, `starts`
    /// true when it begins a message, which first takes a credit (`credit`).
    #[inline]
    pub(crate) fn recv_message(
        &mut self,
        end: bool,
        starts: bool,
        credit: impl FnOnce() -> Result<(), RecvFault>,
    ) -> Result<(), RecvFault> {
        if end && self.role == Role::Caller {
            return Err(RecvFault::protocol("END_STREAM from the responder"));
        }
        if self.recv == Direction::Closed {
            return Err(RecvFault::internal("message after half-close"));
        }
        if starts {
            credit()?;
            if self.single_recv() && self.received >= 1 {
                return Err(RecvFault::internal(
                    "more than one message for this call kind",
                ));
            }
        }
        Ok(())
    }

    /// A resume cursor from the peer: only on the responses of a
    /// server-streaming call this side opened.
    #[inline]
    pub(crate) fn recv_cursor(&self) -> Result<(), RecvFault> {
        if self.role != Role::Caller || self.kind != CallKind::ServerStreaming {
            return Err(RecvFault::protocol(
                "a resume cursor outside the responses of a server-streaming call",
            ));
        }
        Ok(())
    }

    /// A whole message from the peer was delivered.
    #[inline]
    pub(crate) fn delivered(&mut self) {
        self.received += 1;
        if self.recv == Direction::Start {
            self.recv = Direction::Open;
        }
    }

    /// The caller's half-close reached the responder (`partial`: a message
    /// was being reassembled).
    pub(crate) fn recv_half_close(&mut self, partial: bool) -> Result<(), RecvFault> {
        if self.role == Role::Caller {
            return Err(RecvFault::protocol("HALF_CLOSE from the responder"));
        }
        let problem = if self.recv == Direction::Closed {
            Some("duplicate half-close")
        } else if partial {
            Some("half-close inside a fragmented message")
        } else if self.single_recv() && self.received == 0 {
            Some("half-close without the request message")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(RecvFault::internal(p));
        }
        self.recv = Direction::Closed;
        Ok(())
    }

    /// The responder's STATUS reached the caller, after `check` (the
    /// metadata bound): the status the call ends with (an OK status
    /// without the one response it owed becomes `INTERNAL`).
    pub(crate) fn recv_status(
        &self,
        status: Status,
        check: impl FnOnce() -> Result<(), ConnectionError>,
    ) -> Result<Status, RecvFault> {
        if self.role != Role::Caller {
            return Err(RecvFault::protocol("STATUS from the caller"));
        }
        check().map_err(RecvFault::Connection)?;
        if status.is_ok() && self.single_recv() && self.received != 1 {
            return Ok(Status::new(
                Code::Internal,
                "OK status without the one response message",
            ));
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<(), UserError> {
        Ok(())
    }

    #[test]
    fn a_unary_caller_sends_one_request_then_half_closes_once() {
        let mut s = CallState::new(Role::Caller, CallKind::Unary);
        assert!(s.is_unsent() && s.is_live());
        assert_eq!(
            s.half_close(),
            Err(UserError::Cardinality),
            "no request yet"
        );
        s.send_message(ok).unwrap();
        assert_eq!(s.send_message(ok), Err(UserError::Cardinality));
        s.half_close().unwrap();
        assert_eq!(s.half_close(), Err(UserError::SendClosed));
        assert_eq!(s.send_message(ok), Err(UserError::SendClosed));
        s.opened();
        assert!(!s.is_unsent());
    }

    #[test]
    fn a_refused_admission_changes_nothing() {
        let mut s = CallState::new(Role::Caller, CallKind::Unary);
        let blocked = || Err(UserError::Blocked);
        assert_eq!(s.send_message(blocked), Err(UserError::Blocked));
        assert_eq!(s.sent(), 0);
        s.send_message(ok).unwrap();
    }

    #[test]
    fn a_responder_sends_headers_first_only_and_finishes_once() {
        let mut s = CallState::new(Role::Responder, CallKind::Unary);
        assert_eq!(s.half_close(), Err(UserError::NotCaller));
        assert_eq!(
            s.finish(true, ok),
            Err(UserError::Cardinality),
            "OK without the response"
        );
        s.send_headers(ok).unwrap();
        assert_eq!(s.send_headers(ok), Err(UserError::HeadersAlreadySent));
        s.send_message(ok).unwrap();
        let too_large = || Err(UserError::MetadataTooLarge { len: 2, limit: 1 });
        assert!(s.finish(true, too_large).is_err());
        assert!(s.is_live(), "a refused finish leaves the call live");
        s.finish(true, ok).unwrap();
        assert!(!s.is_live() && !s.grants_credit());
    }

    #[test]
    fn the_peer_may_not_send_what_its_role_does_not() {
        let mut caller = CallState::new(Role::Caller, CallKind::Bidi);
        let none = || Ok(());
        assert!(matches!(
            caller.recv_message(true, true, || Ok(())),
            Err(RecvFault::Connection(_))
        ));
        assert!(matches!(
            caller.recv_half_close(false),
            Err(RecvFault::Connection(_))
        ));
        let mut responder = CallState::new(Role::Responder, CallKind::Bidi);
        assert!(matches!(
            responder.recv_headers(none),
            Err(RecvFault::Connection(_))
        ));
        assert!(matches!(
            responder.recv_status(Status::ok(), none),
            Err(RecvFault::Connection(_))
        ));
    }

    #[test]
    fn a_single_response_is_counted_and_checked_by_status() {
        let mut s = CallState::new(Role::Caller, CallKind::Unary);
        let none = || Ok(());
        assert_eq!(s.first_window(16), 1);
        assert_eq!(
            s.recv_status(Status::ok(), none).unwrap().code(),
            Code::Internal
        );
        s.recv_headers(none).unwrap();
        assert!(matches!(s.recv_headers(none), Err(RecvFault::Call(_))));
        s.recv_message(false, true, || Ok(())).unwrap();
        s.delivered();
        assert!(matches!(
            s.recv_message(false, true, || Ok(())),
            Err(RecvFault::Call(_))
        ));
        assert!(s.recv_status(Status::ok(), none).unwrap().is_ok());
    }

    #[test]
    fn half_close_needs_the_one_request_and_no_partial_message() {
        let mut s = CallState::new(Role::Responder, CallKind::Unary);
        assert!(s.recv_half_close(false).is_err(), "no request yet");
        s.recv_message(false, true, || Ok(())).unwrap();
        assert!(s.recv_half_close(true).is_err(), "inside a fragment");
        s.delivered();
        assert!(!s.grants_credit(), "one request: nothing to grant");
        s.recv_half_close(false).unwrap();
        assert!(s.recv_half_close(false).is_err(), "duplicate");
        assert!(matches!(
            s.recv_message(false, true, || Ok(())),
            Err(RecvFault::Call(_))
        ));
    }
}
