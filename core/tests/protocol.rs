//! Round trips of the header and every payload, and the decoders' behaviour on truncated,
//! oversized and random input (property tests: never a panic, always an error or a value).

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use ellipsis_core::protocol::cmd::auth::Auth;
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::backend_status::{BackendStatusEntry, BackendStatusReply};
use ellipsis_core::protocol::cmd::bulk_read::BulkRead;
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::iterator::{IteratorAction, IteratorRecord, IteratorRequest};
use ellipsis_core::protocol::cmd::key_range::KeyRange;
use ellipsis_core::protocol::cmd::lookup::LookupInfo;
use ellipsis_core::protocol::cmd::monitor_stat::MonitorStat;
use ellipsis_core::protocol::cmd::notify::{NotifyEvent, NotifyKind, NotifyRequest};
use ellipsis_core::protocol::cmd::recovery::{RecoveryControl, MAX_REQUEST_JSON_BYTES};
use ellipsis_core::protocol::cmd::route_list::{BackendRoutes, NodeRoutes, RouteList};
use ellipsis_core::protocol::cmd::send::{SendMode, SendRequest, SendResult};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{
    flags, io_flags, Command, Frame, FrameCodec, Header, IoAttr, ProtocolError, Status, HEADER_SIZE,
};
use ellipsis_core::Id;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn id_strategy() -> impl Strategy<Value = Id> {
    proptest::array::uniform32(any::<u8>()).prop_map(|h| {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&h);
        b[32..].copy_from_slice(&h);
        Id(b)
    })
}

fn attr_strategy() -> impl Strategy<Value = IoAttr> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        0u32..1_000_000_000,
        any::<u64>(),
        0u64..1024,
        any::<u64>(),
    )
        .prop_map(|(o, s, t, sec, nsec, uf, fl, sum)| IoAttr {
            offset: u64::from(o),
            size: u64::from(s),
            total_size: t,
            ts_sec: sec,
            ts_nsec: nsec,
            user_flags: uf,
            record_flags: 3,
            io_flags: fl,
            num: 9,
            checksum: sum,
        })
}

fn round_trip<P: Payload + PartialEq + std::fmt::Debug>(p: &P) {
    let b = p.encode();
    assert_eq!(&P::decode(&b).expect("decodes"), p);
    // Every strict prefix is an error, not a panic (payloads with trailing data accept some).
    for cut in 0..b.len() {
        let _ = P::decode(&b[..cut]);
    }
}

proptest! {
    #[test]
    fn header_round_trips(id in id_strategy(), group: u32, code in 0u32..40, status: i32,
                          backend: u32, trace_id: u64, fl: u64, trans: u64, size: u64) {
        let h = Header { id, group, cmd: Command::from_code(code), status: Status(status),
                         backend, trace_id, flags: fl, trans, size };
        let b = h.encode();
        prop_assert_eq!(b.len(), HEADER_SIZE);
        prop_assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn io_payloads_round_trip(attr in attr_strategy(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
        round_trip(&IoPayload { attr, data: data.into() });
        round_trip(&LookupInfo { attr, backend: 3, path: "/srv/b/data-1".into(), data_offset: 128 });
        round_trip(&NotifyEvent { kind: NotifyKind::Remove, attr });
    }

    #[test]
    fn id_list_payloads_round_trip(ids in proptest::collection::vec(id_strategy(), 0..20)) {
        round_trip(&BulkRead { ids: ids.clone() });
        round_trip(&SendRequest { mode: SendMode::Move, groups: vec![1, 2], ids: ids.clone(), backend: None });
        if !ids.is_empty() {
            round_trip(&BackendControl { backend: 1, action: BackendAction::SetIds(ids.clone()) });
        }
        let ranges: Vec<(Id, Id)> = ids.iter().map(|&a| (a, a)).collect();
        round_trip(&IteratorRequest { iterator_id: 5, action: IteratorAction::Start, backend: 2,
                                      with_data: true, ranges, time_range: Some((1, 2)),
                                      include_uncommitted: true, keepalive_skipped: 7 });
        round_trip(&RouteList { nodes: vec![NodeRoutes {
            addr: "127.0.0.1:1025".parse().unwrap(),
            http: Some("[::1]:8080".parse().unwrap()),
            backends: vec![BackendRoutes { group: 1, backend: 0, ids }],
        }]});
    }

    #[test]
    fn recovery_controls_round_trip(json in ".{0,200}", job: u64) {
        round_trip(&RecoveryControl::Start { request_json: json });
        round_trip(&RecoveryControl::Cancel { job });
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Header::decode(&b);
        let _ = IoPayload::decode(&b);
        let _ = LookupInfo::decode(&b);
        let _ = RouteList::decode(&b);
        let _ = KeyRange::decode(&b);
        let _ = BulkRead::decode(&b);
        let _ = IteratorRequest::decode(&b);
        let _ = IteratorRecord::decode(&b);
        let _ = SendRequest::decode(&b);
        let _ = SendResult::decode(&b);
        let _ = BackendControl::decode(&b);
        let _ = BackendStatusReply::decode(&b);
        let _ = MonitorStat::decode(&b);
        let _ = NotifyRequest::decode(&b);
        let _ = NotifyEvent::decode(&b);
        let _ = Auth::decode(&b);
        let _ = RecoveryControl::decode(&b);
        // The same bytes behind a valid RECOVERY start tag and length: the string decoder
        // (UTF-8 check included) sees arbitrary content.
        let mut start = 1u32.to_le_bytes().to_vec();
        start.extend_from_slice(&(b.len() as u32).to_le_bytes());
        start.extend_from_slice(&b);
        let _ = RecoveryControl::decode(&start);
        let mut codec = FrameCodec::new(1 << 16);
        let mut buf = BytesMut::from(&b[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}

#[test]
fn every_fixed_payload_round_trips() {
    round_trip(&KeyRange {
        start: Id::ZERO,
        end: Id::MAX,
        limit: 10,
        io_flags: io_flags::NO_DATA,
    });
    round_trip(&Auth {
        token: "s3cr3t".into(),
    });
    round_trip(&MonitorStat {
        category: "backends".into(),
    });
    round_trip(&NotifyRequest { subscribe: true });
    round_trip(&SendResult {
        id: Id::MAX,
        group: 2,
        status: Status::NEWER_EXISTS,
        job: 12,
        keepalive: false,
    });
    round_trip(&BackendStatusReply {
        backends: vec![BackendStatusEntry {
            backend: 1,
            group: 2,
            enabled: true,
            read_only: false,
            defrag_running: true,
            delay_ms: 5,
            ids: 4,
        }],
    });
    round_trip(&IteratorRecord {
        iterator_id: 1,
        key: Id::MAX,
        status: Status::CORRUPTED,
        keepalive: false,
        iterated: 10,
        total: 20,
        attr: IoAttr::default(),
        data: bytes::Bytes::from_static(b"abc"),
    });
    for action in [
        BackendAction::Enable,
        BackendAction::Disable,
        BackendAction::ReadOnly,
        BackendAction::Writable,
        BackendAction::DefragStart { compact: true },
        BackendAction::DefragStop,
        BackendAction::SetDelay { delay_ms: 100 },
        BackendAction::SetSchedule {
            mode: ellipsis_core::stats::DefragMode::Scheduled,
            timeout_s: 86_400,
            time_hour: 3,
            splay_hours: 2,
            compact: true,
        },
    ] {
        round_trip(&BackendControl { backend: 7, action });
    }
    assert!(format!(
        "{:?}",
        Auth {
            token: "s3cr3t".into()
        }
    )
    .contains("redacted"));
}

#[test]
fn counts_beyond_their_bounds_or_the_payload_are_refused_without_allocating() {
    // A bulk read claiming 4 billion ids in 4 bytes.
    let b = u32::MAX.to_le_bytes();
    assert!(matches!(
        BulkRead::decode(&b),
        Err(ProtocolError::BadCount { .. })
    ));
    // A route list claiming 4096 nodes with no bytes for them.
    let b = 4096u32.to_le_bytes();
    assert!(RouteList::decode(&b).is_err());
    // Bad enums and booleans.
    let mut b = 7u32.to_le_bytes().to_vec();
    b.extend_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        BackendControl::decode(&b),
        Err(ProtocolError::Invalid { .. })
    ));
    assert!(NotifyRequest::decode(&[2]).is_err());
    // Trailing bytes are an error for fixed payloads.
    let mut b = MonitorStat {
        category: "io".into(),
    }
    .encode();
    b.push(0);
    assert!(MonitorStat::decode(&b).is_err());
    // A reversed key range.
    let b = KeyRange {
        start: Id::MAX,
        end: Id::ZERO,
        ..Default::default()
    }
    .encode();
    assert!(KeyRange::decode(&b).is_err());
    // A RECOVERY start document beyond its bound, and one announcing more than it carries.
    let big = RecoveryControl::Start {
        request_json: "x".repeat(MAX_REQUEST_JSON_BYTES as usize + 1),
    }
    .encode();
    assert!(matches!(
        RecoveryControl::decode(&big),
        Err(ProtocolError::BadCount { .. })
    ));
    let mut short = 1u32.to_le_bytes().to_vec();
    short.extend_from_slice(&1000u32.to_le_bytes());
    short.extend_from_slice(b"{}");
    assert!(matches!(
        RecoveryControl::decode(&short),
        Err(ProtocolError::BadCount { .. })
    ));
}

#[test]
fn io_payload_decodes_as_a_slice_of_the_frame_without_copying() {
    let p = IoPayload {
        attr: IoAttr {
            ts_sec: 7,
            ..Default::default()
        },
        data: bytes::Bytes::from(vec![5u8; 4096]),
    };
    let frame = bytes::Bytes::from(p.encode());
    let shared = IoPayload::decode_shared(&frame).unwrap();
    assert_eq!(shared, IoPayload::decode(&frame).unwrap());
    assert_eq!(shared, p);
    // The data points into the frame's buffer.
    let at = shared.data.as_ptr() as usize - frame.as_ptr() as usize;
    assert_eq!(at, ellipsis_core::protocol::IO_ATTR_SIZE);
    assert!(IoPayload::decode_shared(&frame.slice(..10)).is_err());
}

#[test]
fn io_attributes_are_validated() {
    let mut w = ellipsis_core::wire::Writer::new();
    IoAttr {
        ts_nsec: 1_000_000_000,
        ..Default::default()
    }
    .write(&mut w);
    assert!(IoPayload::decode(&w.finish()).is_err());
    let mut w = ellipsis_core::wire::Writer::new();
    IoAttr {
        io_flags: 1 << 40,
        ..Default::default()
    }
    .write(&mut w);
    assert!(IoPayload::decode(&w.finish()).is_err());
}

fn frame(trans: u64, payload: &[u8]) -> Frame {
    let mut h = Header::request(Command::Write, Id::for_key(b"", b"k"), 1, trans);
    h.flags = flags::NEED_ACK;
    Frame::new(h, payload.to_vec())
}

#[test]
fn the_decoder_reassembles_frames_fed_byte_by_byte() {
    let mut codec = FrameCodec::default();
    let mut wire = BytesMut::new();
    for t in 0..3u64 {
        codec
            .encode(frame(t, &vec![t as u8; t as usize * 100]), &mut wire)
            .unwrap();
    }
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in wire.iter() {
        buf.put_u8(*byte);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got.len(), 3);
    for (t, f) in got.iter().enumerate() {
        assert_eq!(f.header.trans, t as u64);
        assert_eq!(f.header.size, t as u64 * 100);
        assert_eq!(f.payload.len(), t * 100);
    }
    assert!(buf.is_empty());
}

#[test]
fn an_oversized_frame_is_refused_from_its_header_alone() {
    let mut codec = FrameCodec::new(1024);
    let mut h = Header::request(Command::Write, Id::ZERO, 1, 1);
    h.size = 1 << 40;
    let mut buf = BytesMut::from(&h.encode()[..]);
    match codec.decode(&mut buf) {
        Err(ProtocolError::FrameTooLarge { size, max }) => {
            assert_eq!((size, max), (1 << 40, 1024));
        }
        other => panic!("{other:?}"),
    }
    let mut out = BytesMut::new();
    assert!(codec
        .encode(Frame::new(h, vec![0u8; 2048]), &mut out)
        .is_err());
}

#[test]
fn unknown_commands_decode_so_the_server_can_answer_them() {
    let mut h = Header::request(Command::Ping, Id::ZERO, 0, 9);
    h.cmd = Command::from_code(999);
    let d = Header::decode(&h.encode()).unwrap();
    assert_eq!(d.cmd, Command::Unknown(999));
    assert_eq!(d.cmd.code(), 999);
    let r = d.reply(Status::NOT_SUPPORTED);
    assert!(r.has(flags::REPLY));
    assert_eq!(r.trans, 9);
    assert_eq!(Status::NOT_SUPPORTED.name(), "NOT_SUPPORTED");
    assert_eq!(Status(-1).name(), "ERRNO_1");
    for c in Command::ALL {
        assert_eq!(Command::from_code(c.code()), c);
    }
}

#[tokio::test]
async fn frames_cross_a_real_tcp_connection_pipelined() {
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(sock, FrameCodec::default());
        while let Some(Ok(f)) = framed.next().await {
            let reply = Frame::new(f.header.reply(Status::OK), f.payload);
            framed.send(reply).await.unwrap();
        }
    });
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = Framed::new(sock, FrameCodec::default());
    for t in 0..50u64 {
        framed.feed(frame(t, &t.to_le_bytes())).await.unwrap();
    }
    framed.flush().await.unwrap();
    for t in 0..50u64 {
        let f = framed.next().await.unwrap().unwrap();
        assert_eq!(f.header.trans, t);
        assert!(f.header.has(flags::REPLY));
        assert_eq!(&f.payload[..], &t.to_le_bytes());
    }
    drop(framed);
    server.await.unwrap();
}

#[tokio::test]
async fn requests_a_peer_never_answers_free_their_slot_when_they_time_out() {
    use ellipsis_core::client::{Conn, ConnError};
    use futures::StreamExt;
    use std::time::Duration;
    use tokio_util::codec::Framed;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    // A peer that reads every request and answers none of them.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<Header>(16);
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(sock, FrameCodec::default());
        while let Some(Ok(f)) = framed.next().await {
            if seen_tx.send(f.header).await.is_err() {
                break;
            }
        }
    });
    let conn = Conn::connect(addr, 1 << 20, Duration::from_secs(5))
        .await
        .unwrap();
    let timeout = Duration::from_millis(20);
    for round in 0..3u64 {
        let calls = (0..50).map(|_| {
            let h = Header::request(Command::Ping, Id::default(), 0, 0);
            let conn = conn.clone();
            async move { conn.call(h, bytes::Bytes::new(), timeout).await }
        });
        let results = futures::future::join_all(calls).await;
        for r in results {
            assert!(
                matches!(r, Err(ConnError::TimedOut { .. })),
                "round {round}: {r:?}"
            );
        }
        assert_eq!(
            conn.in_flight(),
            0,
            "round {round}: timed-out requests hold no slot"
        );
    }
    // An abandoned stream (dropped before its final reply) frees its slot too.
    let h = Header::request(Command::Ping, Id::default(), 0, 0);
    let replies = conn
        .request(h, bytes::Bytes::new(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(conn.in_flight(), 1);
    drop(replies);
    assert_eq!(conn.in_flight(), 0);
    // The peer saw every request: each timed out waiting for a reply, not in the send queue.
    let mut seen = 0;
    while seen < 151 {
        seen_rx.recv().await.unwrap();
        seen += 1;
    }
    drop(conn);
    drop(seen_rx);
    server.abort();
}
