//! A hostile host: many connections on one token, messages of tens of megabytes, host
//! names of a megabyte.

use crate::common::{wait_for, Server};
use crate::figures::{self, Case};
use crate::wire::{self, Ended};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

pub const CASES: &[Case] = &[
    (
        "agents::one_connection_per_instance",
        one_connection_per_instance,
    ),
    (
        "agents::a_60_mb_message_is_refused_unread",
        a_60_mb_message_is_refused_unread,
    ),
    (
        "agents::a_1_mb_hostname_is_refused_or_cut",
        a_1_mb_hostname_is_refused_or_cut,
    ),
];

/// The instance as its account lists it.
fn listed(server: &Server, instance_id: &str) -> serde_json::Value {
    let body = server
        .client()
        .ok("DescribeManagedInstances", &[("InstanceId.1", instance_id)]);
    body["Instances"][0].clone()
}

/// Five WebSockets on one token: each new one replaces the one before, which the server
/// closes (code 4001); only the newest stays, and what the old ones leave behind (their
/// cleanup) does not overwrite what the newest said.
fn one_connection_per_instance() {
    let server = Server::start_logged(&[]);
    let (act, code) = wire::activation(&server.client(), 1, &[]);
    let (id, token) = wire::registered(&server, &act, &code, "host-0");
    let mut sockets = Vec::new();
    for n in 1..=5 {
        sockets.push(wire::welcomed(&server, &id, &token, &format!("host-{n}")));
        let newest = sockets.len() - 1;
        if newest > 0 {
            // The one before is closed by the server, as a replaced connection.
            let ended = wire::wait_end(&mut sockets[newest - 1], Duration::from_secs(5));
            assert_eq!(
                ended,
                Ended::Closed(oca_proto::CLOSE_REPLACED),
                "connection {newest} after connection {} opened",
                newest + 1
            );
        }
    }
    // The old sockets go away on the client's side too; their cleanup must not write
    // their host name (nor an older heartbeat) over the newest connection's.
    let mut old: Vec<_> = sockets.drain(..4).collect();
    for ws in &mut old {
        let _ = ws.close(None);
    }
    drop(old);
    // The newest is served and stays (its heartbeats keep it alive).
    let newest = sockets.last_mut().unwrap();
    for _ in 0..3 {
        newest
            .send(Message::text(r#"{"type":"heartbeat","active_tasks":0}"#))
            .unwrap();
        assert_eq!(
            wire::wait_end(newest, Duration::from_millis(500)),
            Ended::Open
        );
    }
    let i = listed(&server, &id);
    assert_eq!(i["Hostname"], "host-5", "{i}");
    assert_eq!(i["Connected"], true, "{i}");
}

/// A message of 60 MB in frames of 15 MB (each under tungstenite's default frame limit
/// of 16 MiB, the whole under the old 64 MiB message limit), and one of 2.5 MB in
/// frames of 64 KiB: the connection is closed (1009) before the server has read them,
/// its memory stays where it was, and the host may connect again.
fn a_60_mb_message_is_refused_unread() {
    let server = Server::start_logged(&[]);
    let (act, code) = wire::activation(&server.client(), 1, &[]);
    let (id, token) = wire::registered(&server, &act, &code, "big-mouth");
    let mut ws = wire::welcomed(&server, &id, &token, "big-mouth");
    let before = server.peak_rss().unwrap();

    // An Output of 60 MB, as an old server would have taken (and stored) it.
    let mut message = br#"{"type":"output","invoke_id":"t-x","offset":0,"data":""#.to_vec();
    message.resize(60_000_000 - 2, b'A');
    message.extend_from_slice(br#""}"#);
    let ended = send_in_frames(&mut ws, &message, 15_000_000);
    let after = server.peak_rss().unwrap();
    assert_ne!(ended, Ended::Open, "the 60 MB message was taken");
    if let Ended::Closed(code) = ended {
        assert_eq!(code, oca_proto::CLOSE_TOO_BIG);
    }
    figures::note(format!(
        "60 MB agent message:  server peak RSS {:.1} MiB before, {:.1} MiB after",
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64
    ));
    assert!(
        after < before + (16 << 20),
        "peak RSS went from {before} to {after} bytes"
    );

    // Many small frames: the message is refused as soon as it passes the limit.
    let mut ws = wire::welcomed(&server, &id, &token, "big-mouth");
    let mut message = br#"{"type":"output","invoke_id":"t-x","offset":0,"data":""#.to_vec();
    message.resize(2_500_000 - 2, b'A');
    message.extend_from_slice(br#""}"#);
    let ended = send_in_frames(&mut ws, &message, 64 * 1024);
    assert_ne!(ended, Ended::Open, "the 2.5 MB message was taken");
    if let Ended::Closed(code) = ended {
        assert_eq!(code, oca_proto::CLOSE_TOO_BIG);
    }
    assert!(
        server.log_text().contains("Message too long"),
        "the server did not log why it cut the agent off"
    );

    // The host is not banned: a well-behaved connection is served.
    let mut ws = wire::welcomed(&server, &id, &token, "big-mouth");
    assert_eq!(
        wire::wait_end(&mut ws, Duration::from_millis(500)),
        Ended::Open
    );
    let peak = server.peak_rss().unwrap();
    assert!(peak < before + (16 << 20), "peak RSS {peak} bytes");
}

/// Sends `message` as one text message in frames of `frame` bytes (the last one final),
/// then reads until the connection ends; how it ended.
fn send_in_frames(ws: &mut wire::Ws, message: &[u8], frame: usize) -> Ended {
    let chunks: Vec<&[u8]> = message.chunks(frame).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let opcode = if n == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let last = n + 1 == chunks.len();
        let frame = Message::Frame(Frame::message(chunk.to_vec(), opcode, last));
        if ws.write(frame).is_err() || ws.flush().is_err() {
            // The server closed the connection while the message was on its way.
            break;
        }
    }
    wire::wait_end(ws, Duration::from_secs(10))
}

/// A host name of a megabyte: refused at registration (the body is capped, and so is
/// the field), cut in `Hello`; never stored as it came. A host name that breaks the
/// instance name rule does not name the instance.
fn a_1_mb_hostname_is_refused_or_cut() {
    let server = Server::start_logged(&[]);
    let c = server.client();
    let (act, code) = wire::activation(&c, 2, &[]);
    // A megabyte (10^6 bytes: a Hello carrying it stays under the message limit).
    let megabyte = format!("h{}", "x".repeat(999_999));

    // Registration: a body past its cap, then a field past its cap.
    let (status, body) = wire::post(
        &server,
        "/agent/v1/register",
        &wire::registration(&act, &code, &megabyte),
    );
    assert!(
        status == 413 || status == 0,
        "a 1 MB registration: {status} {body}"
    );
    if status == 413 {
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["code"], "InvalidParameter", "{body}");
    }
    let (status, e) = wire::register(&server, &act, &code, &format!("h{}", "x".repeat(300)));
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("InvalidParameter")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("hostname"), "{e}");
    let listed_now = c.ok("DescribeManagedInstances", &[]);
    assert_eq!(listed_now["TotalCount"], 0, "{listed_now}");

    // A host name that is no instance name (it starts with a digit): the instance is
    // named by its id instead.
    let (id, token) = wire::registered(&server, &act, &code, "1st-floor");
    let i = listed(&server, &id);
    assert_eq!(i["InstanceName"], id.as_str(), "{i}");
    assert_eq!(i["Hostname"], "1st-floor", "{i}");

    // Hello: the connection is served, the host name cut to its limit.
    let mut ws = wire::welcomed(&server, &id, &token, &megabyte);
    let hostname = wait_for(Duration::from_secs(5), || {
        let h = listed(&server, &id)["Hostname"].as_str()?.to_string();
        (h != "1st-floor").then_some(h)
    })
    .expect("the Hello's host name was not recorded");
    assert_eq!(hostname.len(), oca_proto::limits::MAX_HOSTNAME);
    assert!(megabyte.starts_with(&hostname));
    assert_eq!(
        wire::wait_end(&mut ws, Duration::from_millis(300)),
        Ended::Open
    );

    // A Hello past the message limit ends the connection; nothing of it is stored.
    let mut ws = wire::connect(&server, &id, &token).unwrap();
    let two_megabytes = format!("h{}", "y".repeat(2 << 20));
    let _ = ws.send(Message::text(wire::hello(&two_megabytes)));
    assert_ne!(wire::wait_end(&mut ws, Duration::from_secs(5)), Ended::Open);
    assert_eq!(listed(&server, &id)["Hostname"], hostname.as_str());
}
