//! The test vectors of docs/vectors.json, checked both ways: decoding the hex
//! gives the listed fields, and encoding those fields gives exactly the hex.

use bytes::Bytes;
use serde_json::Value;
use zrpc_core::frame::{Open, split_batch};
use zrpc_core::*;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/vectors.json"))
        .expect("valid JSON")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn u32f(v: &Value, k: &str) -> u32 {
    v[k].as_u64().unwrap_or_else(|| panic!("field {k}")) as u32
}

fn metadata(v: &Value) -> Metadata {
    let mut m = Metadata::new();
    for e in v.as_array().expect("metadata list") {
        let key = e[0].as_str().unwrap();
        let val = e[1].as_str().unwrap();
        let bytes = if key.ends_with("-bin") {
            hex(val)
        } else {
            val.as_bytes().to_vec()
        };
        m.insert(key, bytes).unwrap();
    }
    m
}

fn frame_of(f: &Value) -> Frame {
    let stream = || StreamId(u32f(f, "stream"));
    match f["type"].as_str().unwrap() {
        "SETTINGS" => {
            let s = &f["settings"];
            let g = |k: &str| s.get(k).map(|v| v.as_u64().unwrap() as u32);
            Frame::Settings(Settings {
                max_message_size: g("max_message_size"),
                max_concurrent_streams: g("max_concurrent_streams"),
                initial_credit: g("initial_credit"),
                max_fragment_size: g("max_fragment_size"),
                max_metadata_size: g("max_metadata_size"),
                max_batch_size: g("max_batch_size"),
            })
        }
        "OPEN" => Frame::Open(Open {
            stream: stream(),
            kind: match f["kind"].as_str().unwrap() {
                "unary" => CallKind::Unary,
                "server_streaming" => CallKind::ServerStreaming,
                "client_streaming" => CallKind::ClientStreaming,
                "bidi" => CallKind::Bidi,
                k => panic!("kind {k}"),
            },
            timeout_ms: u32f(f, "timeout_ms"),
            initial_credit: u32f(f, "initial_credit"),
            method: Method::new(f["method"].as_str().unwrap()).unwrap(),
            metadata: metadata(&f["metadata"]),
        }),
        "HEADERS" => Frame::Headers {
            stream: stream(),
            metadata: metadata(&f["metadata"]),
        },
        "MESSAGE" => Frame::Message {
            stream: stream(),
            end_stream: f["end_stream"].as_bool().unwrap(),
            more: f["more"].as_bool().unwrap(),
            payload: Bytes::from(hex(f["payload_hex"].as_str().unwrap())),
        },
        "HALF_CLOSE" => Frame::HalfClose { stream: stream() },
        "STATUS" => Frame::Status {
            stream: stream(),
            status: Status::new(
                Code::from_u8(u32f(f, "code") as u8),
                f["message"].as_str().unwrap(),
            )
            .with_details(Bytes::from(hex(f["details_hex"].as_str().unwrap()))),
            trailers: metadata(&f["trailers"]),
        },
        "RESET" => Frame::Reset {
            stream: stream(),
            code: Code::from_u8(u32f(f, "code") as u8),
        },
        "CREDIT" => Frame::Credit {
            stream: stream(),
            credit: u32f(f, "credit"),
        },
        "PING" => Frame::Ping {
            ack: f["ack"].as_bool().unwrap(),
            data: hex(f["data_hex"].as_str().unwrap()).try_into().unwrap(),
        },
        "GOAWAY" => Frame::GoAway {
            last_stream_id: StreamId(u32f(f, "last_stream_id")),
            code: u32f(f, "code") as u16,
            reason: f["reason"].as_str().unwrap().to_owned(),
        },
        t => panic!("type {t}"),
    }
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
