//! Mixed load on the people service through one URL (nginx in front of
//! several instances, `scripts/cluster.sh`), for the rolling restart test
//! and for the throughput of 1, 2 and 3 instances:
//!
//! ```sh
//! cargo run --release -p zrpc-cli --example cluster -- --url ws://127.0.0.1:PORT/ --secs 10 --workers 8 --tag run1 [--mix all|unary|echo]
//! ```
//!
//! Each worker has its own [`Channel`] (its own connection, placed by the
//! load balancer), and loops for `--secs`: CreatePerson (unary, a unique
//! name each), and with `--mix all` also ListPeople (a server stream,
//! resumed from the last id when a restart cuts it), ImportPeople (client
//! streaming, all or nothing) and CreatePeople (bidi). Calls the server
//! never processed are sent again by the channel; nothing else is retried,
//! so every write happens at most once. `--mix unary` makes only the
//! CreatePerson calls, `--mix echo` only `echo.Echo/Say` calls (no
//! database: what the proxy and the instances cost). Prints one JSON line: counts,
//! calls/s, unary latency, and every name whose creation was confirmed or
//! left uncertain (a stream cut part way), for the caller to check against
//! the database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zrpc_async::{CallKind, CallOptions, Channel, ChannelConfig, Code, Status};
use zrpc_cli::proto::echo::{EchoReply, EchoRequest};
use zrpc_cli::proto::people::{ImportSummary, ListPeopleRequest, Person};
use zrpc_proto::{decode, encode};
use zrpc_tokio::TokioRuntime;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// What the workers saw, merged.
#[derive(Default)]
struct Tally {
    unary_ok: u64,
    unary_failed: Vec<String>,
    latencies_us: Vec<u64>,
    /// Unary calls completed in each quarter second of the run.
    per_quarter: Vec<u64>,
    streams_completed: u64,
    streams_resumed: u64,
    imports_ok: u64,
    bidi_ok: u64,
    /// Streaming calls that ended with a status the worker handled (a
    /// restart cut them): code and message.
    handled: Vec<String>,
    /// Names whose creation the server confirmed.
    confirmed: Vec<String>,
    /// Names sent on a stream that was cut before confirming them: stored
    /// at most once, perhaps not at all.
    uncertain: Vec<String>,
    /// Stream reads that went backwards or repeated an id.
    order_errors: u64,
    /// The longest operation of each kind, in microseconds.
    slowest_us: [u64; 4],
}

fn person(name: String) -> Person {
    Person {
        name,
        ..Person::default()
    }
}

fn opts() -> CallOptions {
    CallOptions::default().with_timeout(Duration::from_secs(20))
}

/// A ListPeople stream of the tag's people, resumed after the last id
/// received when a restart cuts it.
async fn list(ch: &Channel<TokioRuntime>, tag: &str, t: &Mutex<Tally>) {
    let mut after = 0;
    let mut resumed = false;
    for _ in 0..8 {
        let req = ListPeopleRequest {
            name_contains: tag.to_owned(),
            limit: 200,
            after_id: after,
        };
        let mut call = match ch
            .server_streaming("people.People/ListPeople", encode(&req), opts())
            .await
        {
            Ok(c) => c,
            Err(st) => {
                lock(t).handled.push(format!("ListPeople open: {st}"));
                return;
            }
        };
        loop {
            match call.message().await {
                Ok(Some(m)) => {
                    let p: Person = decode(m).unwrap_or_default();
                    if p.id <= after {
                        lock(t).order_errors += 1;
                    }
                    after = p.id;
                }
                Ok(None) => {
                    let mut t = lock(t);
                    t.streams_completed += 1;
                    t.streams_resumed += u64::from(resumed);
                    return;
                }
                Err(st) if st.code() == Code::Unavailable => {
                    // Cut by a restart (or never processed): resume.
                    lock(t).handled.push(format!("ListPeople: {st}"));
                    resumed = true;
                    break;
                }
                Err(st) => {
                    lock(t).handled.push(format!("ListPeople: {st}"));
                    return;
                }
            }
        }
    }
}

/// ImportPeople of three people, all or nothing: sent again when the
/// server never processed it.
async fn import(ch: &Channel<TokioRuntime>, names: Vec<String>, t: &Mutex<Tally>) {
    for _ in 0..8 {
        let result: Result<ImportSummary, Status> = async {
            let mut call = ch
                .call(
                    "people.People/ImportPeople",
                    CallKind::ClientStreaming,
                    opts(),
                )
                .await?;
            for n in &names {
                call.send(encode(&person(n.clone()))).await?;
            }
            call.close_send()?;
            let resp = call
                .message()
                .await?
                .ok_or_else(|| Status::new(Code::Internal, "no summary"))?;
            call.finish().await?;
            decode(resp)
        }
        .await;
        match result {
            Ok(s) if s.created as usize == names.len() => {
                let mut t = lock(t);
                t.imports_ok += 1;
                t.confirmed.extend(names);
                return;
            }
            Ok(s) => {
                lock(t)
                    .handled
                    .push(format!("ImportPeople created {}", s.created));
                break;
            }
            Err(st) if st.is_not_processed() => continue,
            Err(st) => {
                lock(t).handled.push(format!("ImportPeople: {st}"));
                break;
            }
        }
    }
    lock(t).uncertain.extend(names);
}

/// CreatePeople (bidi): each person confirmed as it is stored; the call
/// is made again when the server never processed it.
async fn bidi(ch: &Channel<TokioRuntime>, names: Vec<String>, t: &Mutex<Tally>) {
    for _ in 0..8 {
        if bidi_once(ch, &names, t).await {
            return;
        }
    }
    lock(t).uncertain.extend(names);
}

/// One CreatePeople call; false when the server never processed it.
async fn bidi_once(ch: &Channel<TokioRuntime>, names: &[String], t: &Mutex<Tally>) -> bool {
    let mut confirmed = 0;
    let result: Result<(), Status> = async {
        let mut call = ch
            .call("people.People/CreatePeople", CallKind::Bidi, opts())
            .await?;
        for n in names {
            call.send(encode(&person(n.clone()))).await?;
            call.message()
                .await?
                .ok_or_else(|| Status::new(Code::Internal, "no answer"))?;
            confirmed += 1;
        }
        call.close_send()?;
        while call.message().await?.is_some() {}
        call.finish().await.map(|_| ())
    }
    .await;
    let mut t = lock(t);
    t.confirmed.extend(names[..confirmed].iter().cloned());
    match result {
        Ok(()) => t.bidi_ok += 1,
        Err(st) if st.is_not_processed() && confirmed == 0 => return false,
        Err(st) => {
            t.handled.push(format!("CreatePeople: {st}"));
            t.uncertain.extend(names[confirmed..].iter().cloned());
        }
    }
    true
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which calls a worker makes.
#[derive(Clone, Copy, PartialEq)]
enum Mix {
    /// All four kinds on the people service.
    All,
    /// CreatePerson only.
    Unary,
    /// echo.Echo/Say only.
    Echo,
}

async fn worker(
    url: String,
    w: usize,
    tag: String,
    (run_started, until): (Instant, Instant),
    mix: Mix,
    t: Arc<Mutex<Tally>>,
) {
    let ch = Channel::new(&url, ChannelConfig::default(), TokioRuntime).expect("url");
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let kind = if mix == Mix::All { i % 10 } else { 0 };
        let op_started = Instant::now();
        match kind {
            7 => list(&ch, &tag, &t).await,
            8 => {
                let names = (0..3).map(|k| format!("{tag}-i-{w}-{i}-{k}")).collect();
                import(&ch, names, &t).await
            }
            9 => {
                let names = (0..2).map(|k| format!("{tag}-b-{w}-{i}-{k}")).collect();
                bidi(&ch, names, &t).await
            }
            _ => {
                let name = format!("{tag}-u-{w}-{i}");
                let started = Instant::now();
                let r = if mix == Mix::Echo {
                    let req = EchoRequest {
                        message: name.clone(),
                        repeat: 0,
                    };
                    ch.unary("echo.Echo/Say", encode(&req), opts())
                        .await
                        .and_then(decode::<EchoReply>)
                        .map(|r| person(r.message))
                } else {
                    let req = encode(&person(name.clone()));
                    ch.unary("people.People/CreatePerson", req, opts())
                        .await
                        .and_then(decode::<Person>)
                };
                let us = started.elapsed().as_micros() as u64;
                let mut t = lock(&t);
                match r {
                    Ok(p) if p.name == name => {
                        let q = (run_started.elapsed().as_millis() / 250) as usize;
                        if t.per_quarter.len() <= q {
                            t.per_quarter.resize(q + 1, 0);
                        }
                        t.per_quarter[q] += 1;
                        t.unary_ok += 1;
                        t.latencies_us.push(us);
                        if mix != Mix::Echo {
                            t.confirmed.push(name);
                        }
                    }
                    Ok(p) => t
                        .unary_failed
                        .push(format!("{name}: answered {:?}", p.name)),
                    Err(st) => t.unary_failed.push(format!("{name}: {st}")),
                }
            }
        }
        let slot = match kind {
            7 => 1,
            8 => 2,
            9 => 3,
            _ => 0,
        };
        let us = op_started.elapsed().as_micros() as u64;
        if us > 1_000_000 {
            eprintln!("worker {w}: operation {kind} took {:.2} s", us as f64 / 1e6);
        }
        let mut t = lock(&t);
        t.slowest_us[slot] = t.slowest_us[slot].max(us);
    }
}

fn json_strings(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let url = arg("--url").expect("--url ws://host:port/");
    let secs: f64 = arg("--secs").map_or(10.0, |s| s.parse().expect("--secs"));
    let workers: usize = arg("--workers").map_or(8, |s| s.parse().expect("--workers"));
    let tag = arg("--tag").unwrap_or_else(|| "load".into());
    let mix = match arg("--mix").as_deref() {
        None | Some("all") => Mix::All,
        Some("unary") => Mix::Unary,
        Some("echo") => Mix::Echo,
        Some(m) => panic!("--mix {m}: expected all, unary or echo"),
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let span = (started, until);
            tokio::spawn(worker(
                url.clone(),
                w,
                tag.clone(),
                span,
                mix,
                tally.clone(),
            ))
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = lock(&tally);
    t.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let n = t.latencies_us.len();
        if n == 0 {
            0
        } else {
            t.latencies_us[((n as f64 * p) as usize).min(n - 1)]
        }
    };
    println!(
        "{{\"secs\":{elapsed:.2},\"workers\":{workers},\"unary_ok\":{},\"unary_failed\":{},\
         \"unary_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"streams_completed\":{},\
         \"streams_resumed\":{},\"imports_ok\":{},\"bidi_ok\":{},\"order_errors\":{},\
         \"slowest_us\":{:?},\"per_quarter\":{:?},\"handled\":{},\"confirmed\":{},\"uncertain\":{}}}",
        t.unary_ok,
        json_strings(&t.unary_failed),
        t.unary_ok as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        t.streams_completed,
        t.streams_resumed,
        t.imports_ok,
        t.bidi_ok,
        t.order_errors,
        t.slowest_us,
        t.per_quarter,
        json_strings(&t.handled),
        json_strings(&t.confirmed),
        json_strings(&t.uncertain),
    );
}
