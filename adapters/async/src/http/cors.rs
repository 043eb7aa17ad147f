//! CORS for browsers calling over fetch (gRPC-Web, Connect): the same
//! Origin policy as WebSocket upgrades decides; an allowed origin gets the
//! `Access-Control-*` headers (the status headers exposed), a refused one
//! gets 403 and none, so its preflight fails.

use hyper::HeaderMap;
use hyper::header::HeaderValue;

/// Response headers a browser may read besides the safe ones.
const EXPOSE: &str = "grpc-status, grpc-message, grpc-status-details-bin, grpc-encoding, \
                      connect-content-encoding, connect-accept-encoding";
/// Request headers a preflight may ask for, at most (bytes).
const MAX_REQUEST_HEADERS: usize = 2048;
/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: &str = "7200";

/// Adds the headers an allowed cross-origin response carries.
pub(crate) fn allow(map: &mut HeaderMap, origin: &HeaderValue) {
    map.insert("access-control-allow-origin", origin.clone());
    map.insert(
        "access-control-expose-headers",
        HeaderValue::from_static(EXPOSE),
    );
    map.append("vary", HeaderValue::from_static("Origin"));
}

/// The answer to an allowed preflight (`OPTIONS` with
/// `Access-Control-Request-Method`).
pub(crate) fn preflight(map: &mut HeaderMap, origin: &HeaderValue, request: &HeaderMap) {
    allow(map, origin);
    map.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET"),
    );
    if let Some(asked) = request.get("access-control-request-headers")
        && asked.len() <= MAX_REQUEST_HEADERS
    {
        map.insert("access-control-allow-headers", asked.clone());
    }
    map.insert("access-control-max-age", HeaderValue::from_static(MAX_AGE));
}
