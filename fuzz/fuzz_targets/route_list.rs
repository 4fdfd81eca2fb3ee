//! ROUTE_LIST payload decoding (what a peer or a client sends on connect): never panics, never
//! allocates beyond its bounds, and whatever it accepts round-trips.
#![no_main]

use ellipsis_core::protocol::cmd::route_list::RouteList;
use ellipsis_core::protocol::cmd::Payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = RouteList::decode(data) {
        let bytes = list.encode();
        assert_eq!(RouteList::decode(&bytes).expect("re-decodes"), list);
    }
});
