//! Arbitrary bytes into the frame decoder, the BATCH splitter and the legacy
//! request parser. Whatever decodes must re-encode to a frame that decodes to
//! itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zrpc_core::frame::split_batch;
use zrpc_core::{Frame, legacy};

fn round_trip(b: Bytes) {
    if let Ok(f) = Frame::decode(b) {
        let encoded = f.to_bytes();
        assert_eq!(encoded.len(), f.encoded_len());
        assert_eq!(Frame::decode(encoded).as_ref(), Ok(&f));
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip(Bytes::copy_from_slice(data));
    if let Ok(frames) = split_batch(Bytes::copy_from_slice(data)) {
        let mut total = 6;
        for f in frames {
            match f {
                Ok(f) => {
                    total += 2 + f.len();
                    round_trip(f);
                }
                Err(_) => break,
            }
        }
        assert!(total <= data.len());
    }
    if let Ok((method, payload)) = legacy::decode_request(Bytes::copy_from_slice(data)) {
        assert_eq!(&legacy::encode_request(method.as_str(), &payload)[..], data);
    }
});
