//! Arbitrary bytes into the frame decoder (and the legacy request parser).
//! Whatever decodes must re-encode to a frame that decodes to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zrpc_core::{Frame, legacy};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::decode(Bytes::copy_from_slice(data)) {
        let encoded = f.to_bytes();
        assert_eq!(encoded.len(), f.encoded_len());
        assert_eq!(Frame::decode(encoded).as_ref(), Ok(&f));
    }
    if let Ok((method, payload)) = legacy::decode_request(Bytes::copy_from_slice(data)) {
        assert_eq!(&legacy::encode_request(method.as_str(), &payload)[..], data);
    }
});
