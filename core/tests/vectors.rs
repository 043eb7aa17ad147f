//! The test vectors of docs/vectors.json, checked both ways: decoding the hex
//! gives the listed fields, and encoding those fields gives exactly the hex.

use bytes::Bytes;
use serde_json::Value;
use zrpc_core::frame::split_batch;
use zrpc_core::*;

mod common;
use common::json::{frame_of, hex};

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/vectors.json"))
        .expect("valid JSON")
}

#[test]
fn valid_frames_decode_to_their_fields_and_encode_to_their_bytes() {
    let v = vectors();
    let frames = v["frames"].as_array().unwrap();
    assert!(frames.len() >= 20);
    let mut types = std::collections::HashSet::new();
    for case in frames {
        let name = case["name"].as_str().unwrap();
        let bytes = hex(case["hex"].as_str().unwrap());
        let expected = frame_of(&case["frame"]);
        types.insert(case["frame"]["type"].as_str().unwrap().to_owned());
        assert_eq!(
            Frame::decode(Bytes::from(bytes.clone())).as_ref(),
            Ok(&expected),
            "decode {name}"
        );
        assert_eq!(expected.to_bytes().to_vec(), bytes, "encode {name}");
        assert_eq!(expected.encoded_len(), bytes.len(), "len {name}");
    }
    assert_eq!(types.len(), 10, "every frame type has a vector");
}

#[test]
fn invalid_frames_give_their_documented_error() {
    let v = vectors();
    for case in v["invalid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let err = Frame::decode(Bytes::from(hex(case["hex"].as_str().unwrap()))).expect_err(name);
        let kind = format!("{err:?}");
        let expected = case["error"].as_str().unwrap();
        assert!(
            kind.starts_with(expected),
            "{name}: got {kind}, expected {expected}"
        );
    }
}

#[test]
fn batches_split_into_their_frames_and_bad_batches_give_their_error() {
    let v = vectors();
    let by_name: std::collections::HashMap<&str, Vec<u8>> = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), hex(c["hex"].as_str().unwrap())))
        .collect();
    let batches = v["batches"].as_array().unwrap();
    assert!(!batches.is_empty());
    for case in batches {
        let name = case["name"].as_str().unwrap();
        let got: Vec<Vec<u8>> = split_batch(Bytes::from(hex(case["hex"].as_str().unwrap())))
            .expect(name)
            .map(|f| f.expect(name).to_vec())
            .collect();
        let want: Vec<Vec<u8>> = case["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| by_name[n.as_str().unwrap()].clone())
            .collect();
        assert_eq!(got, want, "{name}");
    }
    for case in v["invalid_batches"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let bytes = Bytes::from(hex(case["hex"].as_str().unwrap()));
        let err = match split_batch(bytes) {
            Err(e) => e,
            Ok(frames) => frames
                .filter_map(Result::err)
                .next()
                .unwrap_or_else(|| panic!("{name}: no error")),
        };
        assert_eq!(
            format!("{err:?}"),
            case["error"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn legacy_requests_match_the_seed_layout() {
    let v = vectors();
    for case in v["legacy_requests"].as_array().unwrap() {
        let method = case["method"].as_str().unwrap();
        let payload = hex(case["payload_hex"].as_str().unwrap());
        let bytes = hex(case["hex"].as_str().unwrap());
        assert_eq!(legacy::encode_request(method, &payload).to_vec(), bytes);
        let (m, p) = legacy::decode_request(Bytes::from(bytes)).unwrap();
        assert_eq!((m.as_str(), p.to_vec()), (method, payload));
    }
}
