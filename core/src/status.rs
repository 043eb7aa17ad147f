//! Call status: the 17 canonical gRPC codes, a message and optional details.

use std::fmt;

use bytes::Bytes;

/// A canonical status code. The numeric values are gRPC's, so a zrpc status
/// maps 1:1 to a gRPC status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Code {
    /// Not an error; the call succeeded.
    Ok = 0,
    /// The call was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error (also used for codes this version does not know).
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the call completed.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller does not have permission.
    PermissionDenied = 7,
    /// Some resource (a limit, a quota, memory) has been exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted (concurrency conflict and the like).
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The method is not implemented or not supported.
    Unimplemented = 12,
    /// An internal invariant was broken (includes protocol violations on a call).
    Internal = 13,
    /// The service is currently unavailable; a retry may succeed.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request does not have valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// Decodes a wire value; values above 16 map to [`Code::Unknown`], as gRPC does.
    pub fn from_u8(v: u8) -> Code {
        use Code::*;
        match v {
            0 => Ok,
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// The gRPC name of the code, e.g. `DEADLINE_EXCEEDED`.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One constructor per code, named as tonic's: `Status::not_found("...")`.
macro_rules! per_code {
    ($($name:ident => $code:ident),* $(,)?) => {$(
        #[doc = concat!("A [`Code::", stringify!($code), "`] status with this message.")]
        pub fn $name(message: impl Into<String>) -> Self {
            Self::new(Code::$code, message)
        }
    )*};
}

/// The message of [`Status::not_processed`].
const NOT_PROCESSED: &str = "not processed: the peer is draining (GOAWAY); safe to retry";

/// The outcome of a call: a code, a human-readable message and optional
/// binary details (for example a serialized `google.rpc.Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
    /// Recorded by this side's connection, never read from the wire: the
    /// peer cannot have processed the call (see [`Status::is_not_processed`]).
    not_processed: bool,
}

impl Status {
    /// A status with a code and message, and no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Bytes::new(),
            not_processed: false,
        }
    }

    /// `OK` with an empty message.
    pub fn ok() -> Self {
        Self::new(Code::Ok, String::new())
    }

    per_code! {
        cancelled => Cancelled,
        unknown => Unknown,
        invalid_argument => InvalidArgument,
        deadline_exceeded => DeadlineExceeded,
        not_found => NotFound,
        already_exists => AlreadyExists,
        permission_denied => PermissionDenied,
        resource_exhausted => ResourceExhausted,
        failed_precondition => FailedPrecondition,
        aborted => Aborted,
        out_of_range => OutOfRange,
        unimplemented => Unimplemented,
        internal => Internal,
        unavailable => Unavailable,
        data_loss => DataLoss,
        unauthenticated => Unauthenticated,
    }

    /// Attaches binary details.
    pub fn with_details(mut self, details: Bytes) -> Self {
        self.details = details;
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The binary details (may be empty).
    pub fn details(&self) -> &Bytes {
        &self.details
    }

    /// True for [`Code::Ok`].
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// The status of a call the peer announced it never processed: it
    /// drained (GOAWAY) with a last accepted id below the call's. Such a
    /// call had no effect on the peer, so it is safe to send again on
    /// another connection, whatever the method does. Only the connection
    /// makes it, from what it recorded itself.
    pub(crate) fn not_processed() -> Self {
        Self {
            not_processed: true,
            ..Self::new(Code::Unavailable, NOT_PROCESSED)
        }
    }

    /// True when this side's connection recorded that the peer never
    /// processed the call (its GOAWAY's last accepted id was below the
    /// call's): the call may be retried transparently. A fact of the local
    /// side, never derived from the peer's bytes: a status that arrives in a
    /// STATUS frame, or that a handler returns, is never one, whatever its
    /// code and message say.
    pub fn is_not_processed(&self) -> bool {
        self.not_processed
    }

    /// Bytes this status occupies in a STATUS frame, before trailers.
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 2 + self.message.len() + 4 + self.details.len()
    }

    /// A status whose message is cut to fit the wire limit (65,535 bytes, on a
    /// character boundary).
    pub(crate) fn truncated(mut self) -> Self {
        if self.message.len() > u16::MAX as usize {
            let mut end = u16::MAX as usize;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            self.message.truncate(end);
        }
        self
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Status {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let code = Code::arbitrary(u)?;
        let message = String::arbitrary(u)?;
        let details = Vec::<u8>::arbitrary(u)?;
        Ok(Status::new(code, message)
            .with_details(Bytes::from(details))
            .truncated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_values_map_to_unknown() {
        for v in 0..=16u8 {
            assert_eq!(Code::from_u8(v) as u8, v);
        }
        assert_eq!(Code::from_u8(17), Code::Unknown);
        assert_eq!(Code::from_u8(255), Code::Unknown);
        assert_eq!(Code::DeadlineExceeded.to_string(), "DEADLINE_EXCEEDED");
    }

    #[test]
    fn per_code_constructors() {
        assert_eq!(
            Status::invalid_argument("bad"),
            Status::new(Code::InvalidArgument, "bad")
        );
        assert_eq!(Status::unauthenticated("who").code(), Code::Unauthenticated);
        assert_eq!(Status::internal(String::from("x")).message(), "x");
    }

    #[test]
    fn not_processed_is_never_read_from_a_message() {
        let local = Status::not_processed();
        assert!(local.is_not_processed());
        let lookalike = Status::new(Code::Unavailable, local.message());
        assert!(!lookalike.is_not_processed());
        assert!(
            !lookalike
                .clone()
                .with_details(Bytes::new())
                .is_not_processed()
        );
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let s = Status::new(Code::Internal, "é".repeat(40_000)).truncated();
        assert!(s.message().len() <= u16::MAX as usize);
        assert!(s.message().chars().all(|c| c == 'é'));
    }
}
