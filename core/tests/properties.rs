//! Property tests: every frame round-trips; no byte string panics the decoder
//! or a connection (either side, v1 or legacy), and memory stays bounded.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use zrpc_core::frame::Open;
use zrpc_core::*;

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    prop::collection::vec(
        (
            "[a-z0-9][a-z0-9._-]{0,12}",
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..24),
        ),
        0..4,
    )
    .prop_map(|entries| {
        let mut m = Metadata::new();
        for (key, bin, raw) in entries {
            if bin {
                m.insert(&format!("{key}-bin"), raw).unwrap();
            } else {
                let text: Vec<u8> = raw.into_iter().map(|b| 0x20 + b % 0x5f).collect();
                m.insert(&key, text).unwrap();
            }
        }
        m
    })
}

fn arb_code() -> impl Strategy<Value = Code> {
    (0u8..=16).prop_map(Code::from_u8)
}

fn arb_stream() -> impl Strategy<Value = StreamId> {
    (1u32..).prop_map(StreamId)
}

fn arb_kind() -> impl Strategy<Value = CallKind> {
    prop_oneof![
        Just(CallKind::Unary),
        Just(CallKind::ServerStreaming),
        Just(CallKind::ClientStreaming),
        Just(CallKind::Bidi)
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let opt = || prop::option::of(any::<u32>());
    prop_oneof![
        (opt(), opt(), opt(), opt(), opt(), opt(), opt(), opt()).prop_map(
            |(a, b, c, d, e, g, h, i)| {
                Frame::Settings(Settings {
                    max_message_size: a,
                    max_concurrent_streams: b,
                    initial_credit: c,
                    max_fragment_size: d,
                    max_metadata_size: e,
                    max_batch_size: g,
                    max_cursor_size: h,
                    compression: i,
                })
            }
        ),
        (
            arb_stream(),
            arb_kind(),
            any::<u32>(),
            any::<u32>(),
            "\\PC{1,40}",
            arb_metadata()
        )
            .prop_map(
                |(stream, kind, timeout_ms, initial_credit, method, metadata)| {
                    Frame::Open(Open {
                        stream,
                        kind,
                        timeout_ms,
                        initial_credit,
                        method: Method::new(&method).unwrap(),
                        metadata,
                    })
                }
            ),
        (arb_stream(), arb_metadata())
            .prop_map(|(stream, metadata)| Frame::Headers { stream, metadata }),
        (
            arb_stream(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..200)
        )
            .prop_flat_map(|(stream, end, payload)| {
                let more = if end {
                    Just(false).boxed()
                } else {
                    any::<bool>().boxed()
                };
                (
                    more,
                    prop::option::of(prop::collection::vec(any::<u8>(), 0..=255)),
                )
                    .prop_map(move |(more, cursor)| Frame::Message {
                        stream,
                        end_stream: end,
                        more,
                        cursor: cursor.filter(|_| !more).map(Bytes::from),
                        payload: Bytes::from(payload.clone()),
                    })
            }),
        arb_stream().prop_map(|stream| Frame::HalfClose { stream }),
        (
            arb_stream(),
            arb_code(),
            "\\PC{0,40}",
            prop::collection::vec(any::<u8>(), 0..20),
            arb_metadata()
        )
            .prop_map(|(stream, code, msg, details, trailers)| Frame::Status {
                stream,
                status: Status::new(code, msg).with_details(Bytes::from(details)),
                trailers,
            }),
        (arb_stream(), arb_code()).prop_map(|(stream, code)| Frame::Reset { stream, code }),
        (arb_stream(), 1u32..).prop_map(|(stream, credit)| Frame::Credit { stream, credit }),
        (any::<bool>(), any::<[u8; 8]>()).prop_map(|(ack, data)| Frame::Ping { ack, data }),
        (any::<u32>(), any::<u16>(), "\\PC{0,40}").prop_map(|(l, code, reason)| Frame::GoAway {
            last_stream_id: StreamId(l),
            code,
            reason,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_frame_round_trips(f in arb_frame()) {
        let bytes = f.to_bytes();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode(bytes), Ok(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decoded_frames_re_encode(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(f) = Frame::decode(Bytes::from(bytes)) {
            prop_assert_eq!(Frame::decode(f.to_bytes()), Ok(f));
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(f in arb_frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let mut bytes = f.to_bytes().to_vec();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(g) = Frame::decode(Bytes::from(bytes)) {
            prop_assert_eq!(Frame::decode(g.to_bytes()), Ok(g));
        }
    }

    /// Arbitrary messages (frames, and frames made of noise) into a connection
    /// never panic it, and what it holds for the application stays within the
    /// configured connection bound.
    #[test]
    fn arbitrary_input_never_panics_a_connection(
        server in any::<bool>(),
        legacy in any::<bool>(),
        inputs in prop::collection::vec(prop_oneof![
            arb_frame().prop_map(|f| (false, f.to_bytes().to_vec())),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| (false, b)),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| (true, b)),
        ], 0..40),
        steps in prop::collection::vec(0u64..5_000, 0..40),
    ) {
        let now = Instant::now();
        let side = if server { Side::Server } else { Side::Client };
        let mode = if legacy { Mode::Legacy } else { Mode::V1 };
        let cfg = Config { max_connection_buffer: 4096, keepalive_interval: Some(Duration::from_secs(1)), ..Config::default() };
        let mut c = Connection::new(side, mode, cfg, now);
        let _ = c.open_call(now, "m", CallKind::Bidi, OpenOptions { timeout: Some(Duration::from_secs(3)), metadata: Metadata::new() });
        let mut t = now;
        for (i, (text, bytes)) in inputs.into_iter().enumerate() {
            let msg = if text { Incoming::Text(bytes.into()) } else { Incoming::Binary(bytes.into()) };
            let _ = c.handle_message(t, msg);
            t += Duration::from_millis(steps.get(i).copied().unwrap_or(0));
            c.handle_timeout(t);
            prop_assert!(c.buffered_bytes() <= 4096, "buffered {}", c.buffered_bytes());
            let mut n = 0;
            while let Some(ev) = c.poll_event() {
                if let Event::Message { id, data, .. } = ev { c.consume(id, data.len()); }
                n += 1;
                prop_assert!(n < 10_000);
            }
            while c.poll_transmit().is_some() { n += 1; prop_assert!(n < 10_000); }
        }
        c.handle_close(None, "");
        prop_assert_eq!(c.live_calls(), 0);
        prop_assert_eq!(c.buffered_bytes(), 0);
    }
}
