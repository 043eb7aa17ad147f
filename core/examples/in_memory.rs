//! zrpc without sockets: a client and a server state machine exchange a
//! server-streaming call and a bidirectional call in memory, and every frame
//! that crosses the "wire" is printed. Run with:
//!
//! ```text
//! cargo run -p zrpc-core --example in_memory
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_core::*;

/// Moves every pending message from one side to the other, printing it.
fn pump(label: &str, from: &mut Connection, to: &mut Connection, now: Instant) {
    while let Some(t) = from.poll_transmit() {
        match t {
            Transmit::Binary(b) => {
                println!("  {label} {:<48} {}", describe(&b), hex(&b));
                to.handle_message(now, Incoming::Binary(b))
                    .expect("valid frame");
            }
            Transmit::Text(_) => unreachable!("v1 sends no text"),
            Transmit::Close { code, reason } => {
                println!("  {label} close {code} {reason}");
                to.handle_close(Some(code), &reason);
            }
        }
    }
}

fn describe(b: &Bytes) -> String {
    match Frame::decode(b.clone()) {
        Ok(Frame::Settings(_)) => "SETTINGS".into(),
        Ok(Frame::Open(o)) => format!("OPEN #{} {:?} {}", o.stream, o.kind, o.method),
        Ok(Frame::Headers { stream, .. }) => format!("HEADERS #{stream}"),
        Ok(Frame::Message {
            stream,
            end_stream,
            more,
            payload,
            ..
        }) => format!(
            "MESSAGE #{stream} {:?}{}{}",
            String::from_utf8_lossy(&payload),
            if end_stream { " END_STREAM" } else { "" },
            if more { " MORE" } else { "" }
        ),
        Ok(Frame::HalfClose { stream }) => format!("HALF_CLOSE #{stream}"),
        Ok(Frame::Status { stream, status, .. }) => format!("STATUS #{stream} {status}"),
        Ok(Frame::Reset { stream, code }) => format!("RESET #{stream} {code}"),
        Ok(Frame::Credit { stream, credit }) => format!("CREDIT #{stream} +{credit}"),
        Ok(Frame::Ping { ack, .. }) => format!("PING{}", if ack { " ACK" } else { "" }),
        Ok(Frame::GoAway {
            last_stream_id,
            code,
            ..
        }) => format!("GOAWAY last={last_stream_id} code={code}"),
        Err(e) => format!("<{e}>"),
    }
}

fn hex(b: &[u8]) -> String {
    let shown: String = b.iter().take(20).map(|x| format!("{x:02x}")).collect();
    if b.len() > 20 {
        format!("{shown}… ({} bytes)", b.len())
    } else {
        shown
    }
}

/// Handles the server's events like a tiny application: `Repeat` streams
/// the request back three times; `Chat` answers every message in upper case.
fn serve(server: &mut Connection) {
    while let Some(ev) = server.poll_event() {
        match ev {
            Event::CallOpened(call) => println!(
                "  server: call #{} {} ({:?})",
                call.id, call.method, call.kind
            ),
            Event::Message { id, data, .. } => {
                server.consume(id, data.len());
                if id == StreamId(1) {
                    for i in 1..=3 {
                        let reply = format!("{} #{i}", String::from_utf8_lossy(&data));
                        server.send(id, Bytes::from(reply)).unwrap();
                    }
                    server.finish(id, Status::ok(), Metadata::new()).unwrap();
                } else {
                    server
                        .send(
                            id,
                            Bytes::from(String::from_utf8_lossy(&data).to_uppercase()),
                        )
                        .unwrap();
                }
            }
            Event::RecvClosed { id } if id != StreamId(1) => {
                let trailers = Metadata::new().with("x-messages", "2").unwrap();
                server.finish(id, Status::ok(), trailers).unwrap();
            }
            _ => {}
        }
    }
}

fn client_events(client: &mut Connection) {
    while let Some(ev) = client.poll_event() {
        match ev {
            Event::Message { id, data, .. } => {
                client.consume(id, data.len());
                println!(
                    "  client: call #{id} got {:?}",
                    String::from_utf8_lossy(&data)
                );
            }
            Event::CallEnded {
                id,
                status,
                trailers,
            } => {
                println!(
                    "  client: call #{id} ended {status} trailers={:?}",
                    trailers.iter().collect::<Vec<_>>()
                );
            }
            _ => {}
        }
    }
}

fn main() {
    let now = Instant::now();
    let mut client = Connection::client(now);
    let mut server = Connection::server(now);

    println!(
        "zrpc {} in memory: both sides announce their limits",
        SUBPROTOCOL_V1
    );
    pump("c->s", &mut client, &mut server, now);
    pump("s->c", &mut server, &mut client, now);

    println!("\nserver-streaming call demo.Echo/Repeat, 5 s deadline:");
    let opts = OpenOptions {
        timeout: Some(Duration::from_secs(5)),
        metadata: Metadata::new(),
    };
    let repeat = client
        .open_call(now, "demo.Echo/Repeat", CallKind::ServerStreaming, opts)
        .unwrap();
    client.send(repeat, Bytes::from_static(b"hello")).unwrap();
    client.close_send(repeat).unwrap();

    println!("and, on the same connection, bidirectional demo.Echo/Chat:");
    let chat = client
        .open_call(
            now,
            "demo.Echo/Chat",
            CallKind::Bidi,
            OpenOptions::default(),
        )
        .unwrap();
    client.send(chat, Bytes::from_static(b"ping")).unwrap();
    client.send(chat, Bytes::from_static(b"zrpc")).unwrap();
    client.close_send(chat).unwrap();

    for _ in 0..4 {
        pump("c->s", &mut client, &mut server, now);
        serve(&mut server);
        pump("s->c", &mut server, &mut client, now);
        client_events(&mut client);
    }

    println!("\ndrain: the server sends GOAWAY and closes once no call is left");
    server.go_away();
    pump("s->c", &mut server, &mut client, now);
    client_events(&mut client);
    println!(
        "calls left: client {}, server {}",
        client.live_calls(),
        server.live_calls()
    );
}
