//! Connections a client opens and never uses, or fills a byte at a time: they are
//! closed, capped per address, and never lock signed calls out.

use crate::common::*;
use crate::figures::{self, Case};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const CASES: &[Case] = &[
    (
        "connections::idle_and_slow_sockets_are_closed",
        idle_and_slow_sockets_are_closed,
    ),
    (
        "connections::hoarded_sockets_do_not_lock_out_signed_calls",
        hoarded_sockets_do_not_lock_out_signed_calls,
    ),
    (
        "connections::out_of_file_descriptors_the_server_backs_off_and_recovers",
        out_of_file_descriptors_the_server_backs_off_and_recovers,
    ),
];

fn host(server: &Server) -> String {
    server.url().trim_start_matches("http://").to_string()
}

/// Whether the server closed `s` within `limit` (a read sees the end, or a reset).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. 408) before the close
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Item 5: an idle socket, a slowloris head and an idle keep-alive connection are
/// closed after the header read timeout.
fn idle_and_slow_sockets_are_closed() {
    let server = Server::start_logged(&["--header-read-timeout-secs", "2"]);
    let host = host(&server);

    let mut idle = TcpStream::connect(&host).unwrap();
    let t = Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "idle socket"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // A head sent a byte every 300 ms never completes; the connection goes.
    let mut slow = TcpStream::connect(&host).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 1024];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "slowloris head kept open for {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    // A keep-alive connection that served a request, then says nothing.
    let mut keep = TcpStream::connect(&host).unwrap();
    keep.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    keep.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = keep.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    assert!(
        closed_within(&mut keep, Duration::from_secs(10)),
        "idle keep-alive"
    );
    figures::count_answer(404);
}

/// Sets the server's open-file limit (as `ulimit -n` would have).
fn limit_open_files(server: &Server, n: u32) {
    let pid = server.pid().unwrap().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
        .output()
        .expect("prlimit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens `n` connections; half of them send the start of a head and stop.
fn hoard(host: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|i| {
            let mut s = TcpStream::connect(host).ok()?;
            if i % 2 == 0 {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            }
            Some(s)
        })
        .collect()
}

/// Item 5: 1,100 hoarded sockets under `ulimit -n 1100`: the server keeps at most its
/// per-address cap of them, closing the idlest for newcomers, and signed calls from
/// the same address are answered all along.
fn hoarded_sockets_do_not_lock_out_signed_calls() {
    let server = Server::start_logged(&["--max-connections-per-address", "100"]);
    limit_open_files(&server, 1100);
    let host = host(&server);
    let c = server.client();
    let mut hoarded = hoard(&host, 1100);
    // Signed calls, while the hoard is at the cap.
    let t = Instant::now();
    for _ in 0..20 {
        c.ok("DescribeCommands", &[]);
    }
    let took = t.elapsed();
    // The server closed what was over its cap: count what it still holds open.
    std::thread::sleep(Duration::from_millis(500));
    let mut open = 0;
    for s in hoarded.iter_mut() {
        if !closed_within(s, Duration::from_millis(5)) {
            open += 1;
        }
    }
    figures::note(format!(
        "1,100 hoarded sockets (cap 100 per address, ulimit -n 1100): {open} kept open by the server; 20 signed calls in {} ms",
        took.as_millis()
    ));
    assert!(open <= 100, "{open} hoarded sockets still open");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        !server.log_text().contains("Too many open files"),
        "{}",
        server.log_text()
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Item 5: a global cap below the open-file limit keeps the server out of `Too many
/// open files` whatever is hoarded; set above it, accept fails for want of
/// descriptors, and the server backs off (no spinning) and serves again once
/// descriptors are free.
fn out_of_file_descriptors_the_server_backs_off_and_recovers() {
    // Under the cap: hoarded sockets displace each other, signed calls are answered
    // while the hoard is held, and accept never fails.
    let server = Server::start_logged(&[
        "--max-connections-per-address",
        "5000",
        "--max-connections",
        "100",
    ]);
    limit_open_files(&server, 200);
    let host = host(&server);
    let hoarded = hoard(&host, 280);
    let c = server.client();
    for _ in 0..10 {
        c.ok("DescribeCommands", &[]);
    }
    assert!(
        !server.log_text().contains("accept error"),
        "{}",
        server.log_text()
    );
    drop(hoarded);

    // Over it: the server runs out of descriptors.
    let server = Server::start_logged(&[
        "--max-connections-per-address",
        "5000",
        "--max-connections",
        "5000",
        "--header-read-timeout-secs",
        "60",
    ]);
    limit_open_files(&server, 200);
    let host = self::host(&server);
    // More than the descriptors left, and fewer than those plus the listen backlog
    // (128), past which a connect waits for SYN retransmissions.
    let hoarded = hoard(&host, 280);
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.pid().unwrap();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - before;
    figures::note(format!(
        "out of file descriptors for 2 s: the server used {spent} ticks of CPU"
    ));
    assert!(spent < 50, "{spent} ticks in 2 s: the accept loop spins");
    assert!(
        server.log_text().contains("accept error"),
        "{}",
        server.log_text()
    );
    drop(hoarded);
    // Once the hoard is gone, signed calls are served again.
    let c = server.client();
    let served = wait_for(Duration::from_secs(10), || {
        (c.call("DescribeCommands", &[]).status == 200).then_some(())
    });
    assert!(served.is_some(), "the server did not recover");
}
