//! Every other command payload decoder, chosen by the first byte: never panics, and whatever a
//! decoder accepts re-encodes to something it accepts again as the same value. A RECOVERY
//! start's JSON document goes on to the node's own parser (`RecoveryRequest`, what
//! `cmd/recovery.rs` and `POST /admin/recovery` parse), which must refuse or accept it,
//! never panic.
#![no_main]

use ellipsis_core::protocol::cmd::auth::Auth;
use ellipsis_core::protocol::cmd::backend_control::BackendControl;
use ellipsis_core::protocol::cmd::backend_status::BackendStatusReply;
use ellipsis_core::protocol::cmd::bulk_read::BulkRead;
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::iterator::{IteratorRecord, IteratorRequest};
use ellipsis_core::protocol::cmd::key_range::KeyRange;
use ellipsis_core::protocol::cmd::lookup::LookupInfo;
use ellipsis_core::protocol::cmd::monitor_stat::MonitorStat;
use ellipsis_core::protocol::cmd::notify::{NotifyEvent, NotifyRequest};
use ellipsis_core::protocol::cmd::recovery::RecoveryControl;
use ellipsis_core::protocol::cmd::send::{SendRequest, SendResult};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_node::recovery::RecoveryRequest;
use libfuzzer_sys::fuzz_target;

fn round_trip<P: Payload + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(p) = P::decode(data) {
        let bytes = p.encode();
        assert_eq!(P::decode(&bytes).expect("re-decodes"), p);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 15 {
        0 => round_trip::<Auth>(rest),
        1 => round_trip::<BackendControl>(rest),
        2 => round_trip::<BackendStatusReply>(rest),
        3 => round_trip::<BulkRead>(rest),
        4 => round_trip::<IoPayload>(rest),
        5 => round_trip::<IteratorRequest>(rest),
        6 => round_trip::<IteratorRecord>(rest),
        7 => round_trip::<KeyRange>(rest),
        8 => round_trip::<LookupInfo>(rest),
        9 => round_trip::<MonitorStat>(rest),
        10 => round_trip::<NotifyRequest>(rest),
        11 => round_trip::<NotifyEvent>(rest),
        12 => round_trip::<SendRequest>(rest),
        13 => round_trip::<SendResult>(rest),
        _ => {
            round_trip::<RecoveryControl>(rest);
            if let Ok(RecoveryControl::Start { request_json }) = RecoveryControl::decode(rest) {
                let _ = serde_json::from_str::<RecoveryRequest>(&request_json);
            }
        }
    }
});
