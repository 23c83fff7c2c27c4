//! The control socket as a door of its own, with real daemons: what `control_socket` may name
//! (and what the daemon removes), deadlines and rates that trickling clients cannot stretch,
//! idle connections that cannot keep operators out, and the dead-letter prefix rule.
//!
//! Every daemon is SIGKILLed when its test ends, also on panic; every wait and every client
//! loop is bounded in count and in time.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Fleet, NodeOptions, p, stderr, stdout};

const POLL: Duration = Duration::from_millis(100);

/// Puts `line` at the top of node `i`'s edge.toml (top-level keys come before any table).
fn prepend_config(f: &Fleet, i: usize, line: &str) {
    let config = &f.node(i).config;
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{line}\n{text}")).unwrap();
}

/// Removes the first line of node `i`'s edge.toml (undoes [`prepend_config`]).
fn drop_first_config_line(f: &Fleet, i: usize) {
    let config = &f.node(i).config;
    let text = std::fs::read_to_string(config).unwrap();
    let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
    std::fs::write(config, rest).unwrap();
}

/// One control frame: u32 LE length, then JSON.
fn send_frame(s: &mut UnixStream, v: &Value) {
    let body = serde_json::to_vec(v).unwrap();
    s.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
    s.write_all(&body).unwrap();
}

/// One control frame back, within `limit`; `None` if the daemon closed first.
fn read_frame(s: &mut UnixStream, limit: Duration) -> Option<Value> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Whether the daemon closed `s` (EOF or reset) within `limit`, draining what it sent.
fn closed_within(s: &mut UnixStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Writes `bytes` one at a time, `every` apart, until the daemon cuts the connection: whether
/// it did, and after how long.
fn trickle(s: &mut UnixStream, bytes: &[u8], every: Duration) -> (bool, Duration) {
    let started = Instant::now();
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            return (true, started.elapsed());
        }
        std::thread::sleep(every);
    }
    (false, started.elapsed())
}

/// `edged run` on node `i`, which must fail at start with `code`; its stderr.
fn run_fails(f: &Fleet, i: usize, code: i32) -> String {
    let o = f.cli(i, &["run", "--log-format", "json"]);
    f.check(o.status.code() == Some(code), || {
        format!(
            "edged run: expected exit {code}, got {}: {}",
            o.status,
            stderr(&o)
        )
    });
    stderr(&o)
}

#[test]
fn inv_21_control_socket_never_removes_what_is_not_a_stale_socket() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let dir = f.node(1).dir.clone();

    // A regular file named by control_socket is a config error naming the key and the file;
    // the file keeps its bytes.
    let important = dir.join("important.txt");
    std::fs::write(&important, "the only copy").unwrap();
    prepend_config(&f, 1, "control_socket = \"important.txt\"");
    let err = run_fails(&f, 1, 3);
    f.check(
        err.contains("control_socket")
            && err.contains("important.txt")
            && err.contains("regular file"),
        || format!("the error names the key and the file: {err}"),
    );
    f.check(
        std::fs::read_to_string(&important).ok().as_deref() == Some("the only copy"),
        || "important.txt survives".into(),
    );
    drop_first_config_line(&f, 1);

    // The node's own database: refused by the config check, before anything is opened.
    f.start(1);
    f.sigterm(1);
    let db = f.node(1).data_dir().join("edge.redb");
    let before = std::fs::read(&db).unwrap();
    for path in [
        "data/edge.redb",
        "data/./tmp/../edge.redb",
        "data/segments/x.sock",
    ] {
        prepend_config(&f, 1, &format!("control_socket = \"{path}\""));
        let err = run_fails(&f, 1, 3);
        f.check(err.contains("`control_socket`"), || {
            format!("{path}: the error names the key: {err}")
        });
        drop_first_config_line(&f, 1);
    }
    f.check(std::fs::read(&db).ok() == Some(before), || {
        "the database survives, byte for byte".into()
    });

    // A directory, a symlink, a FIFO: each refused, each left as it was.
    let target = dir.join("target.txt");
    std::fs::write(&target, "pointed at").unwrap();
    let make = |name: &str, path: &Path| match name {
        "a-dir" => std::fs::create_dir(path).unwrap(),
        "a-link" => std::os::unix::fs::symlink("target.txt", path).unwrap(),
        _ => rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap(),
    };
    let cases = [
        ("a-dir", "directory"),
        ("a-link", "symbolic link"),
        ("a-fifo", "FIFO"),
    ];
    for (name, kind) in cases {
        let path = dir.join(name);
        make(name, &path);
        prepend_config(&f, 1, &format!("control_socket = \"{name}\""));
        let err = run_fails(&f, 1, 3);
        f.check(err.contains("control_socket") && err.contains(kind), || {
            format!("{name}: {err}")
        });
        let ft = std::fs::symlink_metadata(&path).unwrap().file_type();
        let intact = match kind {
            "directory" => ft.is_dir(),
            "symbolic link" => ft.is_symlink(),
            _ => ft.is_fifo(),
        };
        f.check(intact, || format!("{name} left as it was"));
        drop_first_config_line(&f, 1);
    }
    f.check(
        std::fs::read_to_string(&target).ok().as_deref() == Some("pointed at"),
        || "the symlink's target is untouched".into(),
    );

    // A socket that answers is in use (exit 4), and stays.
    let busy = dir.join("busy.sock");
    let listener = UnixListener::bind(&busy).unwrap();
    prepend_config(&f, 1, "control_socket = \"busy.sock\"");
    let err = run_fails(&f, 1, 4);
    f.check(err.contains("in use"), || format!("busy socket: {err}"));
    f.check(std::fs::symlink_metadata(&busy).is_ok(), || {
        "the busy socket stays".into()
    });
    // Once nobody answers on it, it is stale: removed, and the daemon binds its own.
    drop(listener);
    f.start_waiting_on(1, &busy);
    let o = f.cli(1, &["status"]);
    f.check(o.status.success(), || format!("status: {}", stderr(&o)));

    // At shutdown, a file put where the socket was is not the daemon's to remove.
    std::fs::remove_file(&busy).unwrap();
    std::fs::write(&busy, "someone else's").unwrap();
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || format!("SIGTERM: {status}"));
    f.check(
        std::fs::read_to_string(&busy).ok().as_deref() == Some("someone else's"),
        || "the replacement file survives the daemon's shutdown".into(),
    );
}

/// A client that trickles a request that never completes: a frame announcing 1000 bytes, one
/// byte every `every`; when cut off, it connects again. Stops when told, or after `rounds`
/// bytes in all.
fn slowloris(
    socket: &Path,
    every: Duration,
    rounds: usize,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        let mut conn: Option<UnixStream> = None;
        for _ in 0..rounds {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let s = match conn.as_mut() {
                Some(s) => s,
                None => match UnixStream::connect(&socket) {
                    Ok(mut s) => {
                        if s.write_all(&1000u32.to_le_bytes()).is_err() {
                            continue;
                        }
                        conn.insert(s)
                    }
                    Err(_) => {
                        std::thread::sleep(every);
                        continue;
                    }
                },
            };
            if s.write_all(b" ").is_err() {
                cuts.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
            std::thread::sleep(every);
        }
    })
}

#[test]
fn slowloris_clients_cannot_keep_status_or_a_scrape_out() {
    // Default control limits: a trickling request may last up to its 10 s deadline.
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default().metrics());
    f.start(1);
    let socket = f.node(1).control_socket();
    let stop = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));
    // More clients than connection slots, each sending a byte every 200 ms: no idle gap ever
    // grows, so only a deadline from the first byte or shedding can stop them.
    let clients: Vec<_> = (0..10)
        .map(|_| {
            slowloris(
                &socket,
                Duration::from_millis(200),
                150,
                stop.clone(),
                cuts.clone(),
            )
        })
        .collect();
    // And 40 idle TCP connections on the metrics endpoint.
    let port = f.node(1).metrics_port.unwrap();
    let idle: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(600));

    let started = Instant::now();
    let o = f.cli(1, &["status", "--json"]);
    let took = started.elapsed();
    f.check(o.status.success(), || {
        format!("status: {} {}", o.status, stderr(&o))
    });
    eprintln!("status with 10 trickling clients: {took:?}");
    // Far below the 10 s request deadline: status did not wait for a trickler to time out.
    f.check(took < Duration::from_secs(5), || {
        format!("status took {took:?}")
    });

    let started = Instant::now();
    let (code, body) = support::http_get(port, "/metrics").unwrap_or_else(|e| f.fail(e));
    let took = started.elapsed();
    eprintln!("scrape with 40 idle TCP connections: {took:?}");
    f.check(code == 200 && body.contains("edged_uptime_seconds"), || {
        format!("scrape: {code}\n{body}")
    });
    f.check(took < Duration::from_secs(4), || {
        format!("scrape took {took:?}")
    });

    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    drop(idle);
    eprintln!("trickling connections cut: {}", cuts.load(Ordering::SeqCst));
    let status = f.sigterm(1);
    f.check(status.code() == Some(0), || format!("SIGTERM: {status}"));
}

#[test]
fn a_request_must_complete_within_its_deadline_from_the_first_byte() {
    const DEADLINE_MS: u64 = 1_000;
    let mut f = Fleet::new(1, &[], |_| {
        NodeOptions::default().control("request_deadline_ms", DEADLINE_MS)
    });
    f.start(1);
    let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
    s.write_all(&1000u32.to_le_bytes()).unwrap();
    // One byte every 100 ms, far inside the 60 s idle timeout: only the deadline can end it.
    let (cut, took) = trickle(&mut s, &[b' '; 50], Duration::from_millis(100));
    f.check(cut, || {
        format!("a trickling request was still open after {took:?}")
    });
    f.check(took >= Duration::from_millis(DEADLINE_MS - 100), || {
        format!("cut before its deadline: {took:?}")
    });
    let answer = read_frame(&mut s, Duration::from_secs(2));
    f.check(
        answer.as_ref().is_some_and(|a| {
            a["kind"] == "error"
                && a["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not complete within"))
        }),
        || format!("the cut client is told why: {answer:?}"),
    );
    // The daemon goes on serving.
    let o = f.cli(1, &["status"]);
    f.check(o.status.success(), || format!("status: {}", stderr(&o)));
}

#[test]
fn an_import_body_must_keep_a_minimum_rate() {
    let mut f = Fleet::new(1, &[], |_| {
        NodeOptions::default()
            .control("stream_rate_min_bytes_per_s", 10_000)
            .control("stream_rate_window_ms", 500)
            .metrics()
    });
    f.start(1);
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (seg, _) = f.make_segment("slow", 64 * 1024, &usb);
    let bytes = std::fs::read(&seg).unwrap();
    let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
    send_frame(
        &mut s,
        &json!({ "op": "import", "file_name": "slow.seg", "len": bytes.len() }),
    );
    // 20 bytes per second: every byte keeps the connection busy, none is enough.
    let (cut, took) = trickle(&mut s, &bytes[..200], Duration::from_millis(50));
    f.check(cut, || {
        format!("a trickled import body was still read after {took:?}")
    });
    let answer = read_frame(&mut s, Duration::from_secs(2));
    f.check(
        answer.as_ref().is_some_and(|a| {
            a["kind"] == "error"
                && a["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("import cut") && m.contains("too slowly"))
        }),
        || format!("the cut client is told why: {answer:?}"),
    );
    // Nothing stored, nothing left in tmp/, and no verdict counted.
    f.check(f.segment_ids(1).is_empty(), || "nothing stored".into());
    let tmp: Vec<_> = std::fs::read_dir(f.node(1).data_dir().join("tmp"))
        .unwrap()
        .collect();
    f.check(tmp.is_empty(), || format!("tmp/ holds {tmp:?}"));
    let (_, body) = support::http_get(f.node(1).metrics_port.unwrap(), "/metrics")
        .unwrap_or_else(|e| f.fail(e));
    f.check(body.contains("edged_segments_received_total 0\n"), || {
        format!("a cut import is not received:\n{body}")
    });
    // The same file at full speed is imported.
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
}

#[test]
fn idle_connections_at_the_cap_make_room_for_a_new_client() {
    let mut f = Fleet::new(1, &[], |_| {
        NodeOptions::default().control("connections_max", 2)
    });
    f.start(1);
    let socket = f.node(1).control_socket();
    let mut first = UnixStream::connect(&socket).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut second = UnixStream::connect(&socket).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Both slots are held by clients that say nothing (for up to the 60 s idle timeout).
    let started = Instant::now();
    let o = f.cli(1, &["status"]);
    f.check(o.status.success(), || format!("status: {}", stderr(&o)));
    f.check(started.elapsed() < Duration::from_secs(5), || {
        format!("status waited {:?}", started.elapsed())
    });
    f.check(closed_within(&mut first, Duration::from_secs(2)), || {
        "the oldest idle connection was closed to make room".into()
    });
    f.check(
        !closed_within(&mut second, Duration::from_millis(200)),
        || "the younger idle connection was kept".into(),
    );
}

#[test]
fn warnings_a_local_client_can_repeat_are_rate_limited() {
    const TRIES: usize = 30;
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let socket = f.node(1).control_socket();
    for _ in 0..TRIES {
        // A request that is not JSON…
        let mut s = UnixStream::connect(&socket).unwrap();
        s.write_all(&5u32.to_le_bytes()).unwrap();
        s.write_all(b"{nope").unwrap();
        let answer = read_frame(&mut s, Duration::from_secs(10));
        f.check(answer.is_some_and(|a| a["kind"] == "error"), || {
            "bad request answered".into()
        });
        // …and an import of something that is no segment.
        let mut s = UnixStream::connect(&socket).unwrap();
        let junk = b"junk junk junk junk";
        send_frame(
            &mut s,
            &json!({ "op": "import", "file_name": "junk.seg", "len": junk.len() }),
        );
        s.write_all(junk).unwrap();
        let answer = read_frame(&mut s, Duration::from_secs(10));
        f.check(
            answer.is_some_and(|a| a["body"]["status"] == "rejected"),
            || "import rejected".into(),
        );
    }
    // Every request was answered; the log got a handful of lines, not one per request.
    for message in [
        "control socket: bad request; connection closed",
        "import rejected",
    ] {
        let logged = f.events(1, 0, message).len();
        f.check(
            (1..=net::logcap::LOG_WARNINGS_PER_WINDOW as usize).contains(&logged),
            || format!("{logged} lines of {message:?} for {TRIES} requests"),
        );
    }
}

#[test]
fn import_file_name_bound_at_n_and_n_plus_1() {
    const NAME_BYTES_MAX: usize = 1024;
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let junk = b"no segment";
    for (len, accepted) in [(NAME_BYTES_MAX, true), (NAME_BYTES_MAX + 1, false)] {
        let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
        let name = "n".repeat(len);
        send_frame(
            &mut s,
            &json!({ "op": "import", "file_name": name, "len": junk.len() }),
        );
        // The daemon may close before it reads the body it refuses.
        let _ = s.write_all(junk);
        let answer = read_frame(&mut s, Duration::from_secs(10)).unwrap_or_default();
        let ok = if accepted {
            // Read, judged as a segment (it is none).
            answer["body"]["status"] == "rejected"
        } else {
            answer["kind"] == "error"
                && answer["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("file name"))
        };
        f.check(ok, || format!("file name of {len} bytes: {answer}"));
    }
}

/// Dead letters of node 1, from its daemon.
fn dead_letters(f: &Fleet) -> Vec<Value> {
    f.json(1, &["dlq", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn dlq_requeue_and_purge_need_a_segment_prefix_of_4_hex_characters() {
    // node-2 never runs: node-1's job for it dies after one attempt.
    let mut f = Fleet::new(2, &[(1, 2)], |_| {
        NodeOptions::default().relay("attempts_max", 1)
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (_, id) = f.make_segment("policy", 4096, &usb);
    // The CLI checks before it asks: with no daemon, a bad prefix is still a usage error
    // (exit 2), not "the daemon is not running" (exit 6).
    let o = f.cli(
        1,
        &["dlq", "requeue", "--peer", "node-2", "--segment", "abc"],
    );
    f.check(
        o.status.code() == Some(2) && stderr(&o).contains("--segment"),
        || format!("no daemon: {} {}", o.status, stderr(&o)),
    );
    f.start(1);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    let dead = f.wait_for("a dead letter", Duration::from_secs(30), POLL, || {
        let dead = dead_letters(&f);
        (dead.len() == 1).then_some(dead)
    });

    // The CLI refuses short prefixes before asking anything.
    for action in ["requeue", "purge"] {
        for prefix in ["", "a", &id[..3], "zzzz"] {
            let o = f.cli(1, &["dlq", action, "--peer", "node-2", "--segment", prefix]);
            f.check(o.status.code() == Some(2), || {
                format!(
                    "dlq {action} --segment {prefix:?}: {} {}",
                    o.status,
                    stderr(&o)
                )
            });
            f.check(stderr(&o).contains("--segment"), || {
                format!("the message names the flag: {}", stderr(&o))
            });
        }
    }
    // The daemon refuses them too: the control socket is a door of its own.
    for op in ["dlq_requeue", "dlq_purge"] {
        for prefix in ["", "a", &id[..3]] {
            let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
            send_frame(
                &mut s,
                &json!({ "op": op, "peer": "node-2", "segment": prefix }),
            );
            let answer = read_frame(&mut s, Duration::from_secs(10));
            f.check(
                answer.as_ref().is_some_and(|a| {
                    a["kind"] == "error"
                        && a["code"] == 2
                        && a["message"].as_str().is_some_and(|m| m.contains("prefix"))
                }),
                || format!("{op} {prefix:?}: {answer:?}"),
            );
        }
    }
    f.check(dead_letters(&f) == dead, || {
        "no dead letter was touched".into()
    });
    f.check(f.events(1, 0, "dead letter requeued").is_empty(), || {
        "nothing was requeued".into()
    });

    // Four characters are enough; upper case too.
    let o = f.cli(
        1,
        &[
            "dlq",
            "purge",
            "--peer",
            "node-2",
            "--segment",
            &id[..4].to_uppercase(),
        ],
    );
    f.check(o.status.success() && stdout(&o).contains("purged"), || {
        format!(
            "purge by prefix: {} {} {}",
            o.status,
            stdout(&o),
            stderr(&o)
        )
    });
    f.check(dead_letters(&f).is_empty(), || {
        "the dead letter is purged".into()
    });
}

/// One control frame back with its length in bytes, within `limit`.
fn read_frame_sized(s: &mut UnixStream, limit: Duration) -> Option<(usize, Value)> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some((body.len(), serde_json::from_slice(&body).ok()?))
}

#[test]
fn listings_go_out_in_bounded_pages_and_the_cli_prints_every_item_in_order() {
    // A page of at most 7 items and about 2 KiB: 40 segments' rows (some 20 KiB of JSON) are
    // far more than one such page holds, as 10,000 are more than one 4 MiB frame.
    const SEGMENTS: usize = 40;
    const PAGE_ITEMS: usize = 7;
    const PAGE_BYTES: usize = 2048;
    let mut f = Fleet::new(1, &[], |_| {
        NodeOptions::default()
            .control("list_page_items", PAGE_ITEMS)
            .control("list_page_bytes", PAGE_BYTES)
    });
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let mut ids: Vec<String> = (0..SEGMENTS)
        .map(|i| f.make_segment(&format!("many-{i:02}"), 64, &usb).1)
        .collect();
    ids.sort();
    f.start(1);
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));

    // On the socket: pages within their bounds, then the end with the count.
    let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
    send_frame(&mut s, &json!({ "op": "segments" }));
    let (mut listed, mut pages, mut bytes) = (Vec::new(), 0, 0);
    loop {
        let Some((len, frame)) = read_frame_sized(&mut s, Duration::from_secs(10)) else {
            f.fail(format!("the listing stopped after {pages} pages"));
        };
        match frame["kind"].as_str() {
            Some("page") => {
                let items = frame["items"].as_array().cloned().unwrap_or_default();
                f.check(
                    !items.is_empty()
                        && items.len() <= PAGE_ITEMS
                        && (len <= PAGE_BYTES || items.len() == 1),
                    || format!("page of {} items, {len} bytes", items.len()),
                );
                listed.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
                pages += 1;
                bytes += len;
            }
            Some("end") => {
                f.check(frame["count"] == SEGMENTS, || format!("end: {frame}"));
                break;
            }
            _ => f.fail(format!("not a page: {frame}")),
        }
    }
    f.check(
        bytes > 4 * PAGE_BYTES && pages >= SEGMENTS / PAGE_ITEMS,
        || format!("{pages} pages, {bytes} bytes"),
    );
    f.check(listed == ids, || {
        format!("listed {listed:?}, stored {ids:?}")
    });
    // The connection stays usable after a listing.
    send_frame(&mut s, &json!({ "op": "status" }));
    let status = read_frame(&mut s, Duration::from_secs(10));
    f.check(
        status
            .as_ref()
            .is_some_and(|v| v["body"]["segments_stored"] == SEGMENTS),
        || format!("status after the listing: {status:?}"),
    );

    // The CLI's --json: one valid array of every item, in order.
    let v = f.json(1, &["segments"]);
    let json_ids: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    f.check(json_ids == ids, || format!("--json listed {json_ids:?}"));
    // The table: a header, a row per segment, the count.
    let o = f.cli(1, &["segments"]);
    let out = stdout(&o);
    f.check(
        o.status.success()
            && out.lines().count() == SEGMENTS + 2
            && out.contains(&format!("{SEGMENTS} segment(s)")),
        || format!("table: {out}"),
    );
    // An empty listing is an empty array; export selections page too.
    f.check(f.json(1, &["dlq", "list"]) == json!([]), || {
        "dlq list".into()
    });
    let out_dir = f.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let o = f.cli(1, &["export", "--all", "--to", p(&out_dir)]);
    let exported = std::fs::read_dir(&out_dir).map_or(0, |d| d.count());
    f.check(o.status.success() && exported == SEGMENTS, || {
        format!("export --all: {exported} files, {}", stderr(&o))
    });
}

#[test]
fn imports_sent_without_waiting_are_answered_in_order_and_a_later_request_after_them() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (a_file, a) = f.make_segment("a", 3000, &usb);
    let (b_file, b) = f.make_segment("b", 5000, &usb);
    f.start(1);
    let (a_bytes, b_bytes) = (
        std::fs::read(&a_file).unwrap(),
        std::fs::read(&b_file).unwrap(),
    );
    let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
    // Four requests back to back, no answer read in between.
    for (name, bytes) in [
        ("a.seg", &a_bytes),
        ("b.seg", &b_bytes),
        ("a.seg", &a_bytes),
    ] {
        send_frame(
            &mut s,
            &json!({ "op": "import", "file_name": name, "len": bytes.len() }),
        );
        s.write_all(bytes).unwrap();
    }
    send_frame(&mut s, &json!({ "op": "status" }));
    let answers: Vec<Option<Value>> = (0..4)
        .map(|_| read_frame(&mut s, Duration::from_secs(20)))
        .collect();
    let body = |i: usize| {
        answers[i]
            .as_ref()
            .map(|v| v["body"].clone())
            .unwrap_or_default()
    };
    f.check(
        body(0)["status"] == "imported"
            && body(0)["id"] == a.as_str()
            && body(1)["status"] == "imported"
            && body(1)["id"] == b.as_str()
            && body(2)["status"] == "already_present"
            && body(3)["segments_stored"] == 2,
        || format!("answers: {answers:?}"),
    );
    // A body cut short: answered as cut, nothing stored, the connection closed.
    send_frame(
        &mut s,
        &json!({ "op": "import", "file_name": "cut.seg", "len": 1000 }),
    );
    s.write_all(&a_bytes[..100]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let cut = read_frame(&mut s, Duration::from_secs(20));
    f.check(
        cut.as_ref().is_some_and(|v| {
            v["kind"] == "error" && v["message"].as_str().is_some_and(|m| m.contains("cut"))
        }),
        || format!("cut: {cut:?}"),
    );
    f.check(closed_within(&mut s, Duration::from_secs(10)), || {
        "the connection is closed after a cut".into()
    });
}

/// An import whose outboard is declared larger than any segment's is refused before a byte of
/// it is read, the connection closed, nothing stored; the daemon goes on serving.
#[test]
fn inv_17_an_import_outboard_larger_than_any_segments_is_refused_unread() {
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
    send_frame(
        &mut s,
        &json!({ "op": "import", "file_name": "big.seg", "len": 4096, "outboard_len": 1u64 << 40 }),
    );
    let answer = read_frame(&mut s, Duration::from_secs(5));
    f.check(
        answer.as_ref().is_some_and(|a| {
            a["kind"] == "error"
                && a["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("larger than any segment"))
        }),
        || format!("the client is told why: {answer:?}"),
    );
    f.check(closed_within(&mut s, Duration::from_secs(5)), || {
        "the connection stays open after a refused body".into()
    });
    f.check(f.segment_ids(1).is_empty(), || "nothing stored".into());
    let o = f.cli(1, &["status"]);
    f.check(o.status.success(), || format!("status: {}", stderr(&o)));
}

/// An import whose outboard does not hash to the segment's signed root stores nothing and
/// leaves nothing in tmp/; the same file with its own outboard (the CLI's) is imported.
#[test]
fn inv_02_an_import_with_a_wrong_outboard_stores_nothing() {
    const PAYLOAD: u64 = (3 << 20) + 100;
    // 32 bytes of chaining value per 1 MiB group.
    const OUTBOARD: usize = 4 * 32;
    let mut f = Fleet::new(1, &[], |_| NodeOptions::default());
    f.start(1);
    let usb = f.path("usb");
    std::fs::create_dir(&usb).unwrap();
    let (seg, _) = f.make_segment("groups", PAYLOAD, &usb);
    let bytes = std::fs::read(&seg).unwrap();
    let mut s = UnixStream::connect(f.node(1).control_socket()).unwrap();
    send_frame(
        &mut s,
        &json!({ "op": "import", "file_name": "groups.seg", "len": bytes.len(), "outboard_len": OUTBOARD }),
    );
    s.write_all(&[0x5a; OUTBOARD]).unwrap();
    // The daemon may stop reading at the bad outboard: the rest of the body need not go in.
    let _ = s.write_all(&bytes);
    let answer = read_frame(&mut s, Duration::from_secs(10));
    f.check(
        answer.as_ref().is_some_and(|a| {
            a["body"]["status"] == "rejected"
                && a["body"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("outboard"))
        }),
        || format!("a wrong outboard is rejected, and says so: {answer:?}"),
    );
    f.check(f.segment_ids(1).is_empty(), || "nothing stored".into());
    let tmp: Vec<_> = std::fs::read_dir(f.node(1).data_dir().join("tmp"))
        .unwrap()
        .collect();
    f.check(tmp.is_empty(), || format!("tmp/ holds {tmp:?}"));
    let o = f.cli(1, &["import", p(&usb)]);
    f.check(o.status.success(), || format!("import: {}", stderr(&o)));
    f.check(f.segment_ids(1).len() == 1, || "imported".into());
}
