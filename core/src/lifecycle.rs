//! Where a connection is in its life, and the bound on the reason its
//! WebSocket close carries; shared by both wire formats.

/// Where a connection is in its life (both wire formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// Only queued output (GOAWAY, the close) remains.
    Closing,
    Closed,
}

/// Longest WebSocket close reason in bytes (RFC 6455: 125 bytes of payload,
/// two of which are the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// Cuts a close reason to [`MAX_CLOSE_REASON`] bytes on a character boundary.
pub(crate) fn close_reason(s: &str) -> String {
    let mut end = s.len().min(MAX_CLOSE_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let r = close_reason(&"ü".repeat(100));
        assert!(r.len() <= MAX_CLOSE_REASON && r.chars().all(|c| c == 'ü'));
    }
}
