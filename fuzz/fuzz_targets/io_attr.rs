//! IoAttr decoding: never panics; an accepted attribute set satisfies the decoder's
//! invariants and round-trips byte for byte (apart from the reserved word, written as zero).
#![no_main]

use ellipsis_core::protocol::{io_flags, IoAttr, IO_ATTR_SIZE};
use ellipsis_core::wire::{Reader, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data, "fuzz");
    let Ok(a) = IoAttr::read(&mut r) else {
        return;
    };
    assert!(a.ts_nsec < 1_000_000_000);
    assert_eq!(a.io_flags & !io_flags::KNOWN, 0);
    assert!(a.offset.checked_add(a.size).is_some());
    let mut w = Writer::new();
    a.write(&mut w);
    let bytes = w.finish();
    assert_eq!(bytes.len(), IO_ATTR_SIZE);
    assert_eq!(&bytes[..36], &data[..36]);
    assert_eq!(&bytes[40..], &data[40..IO_ATTR_SIZE]);
    let again = IoAttr::read(&mut Reader::new(&bytes, "fuzz")).expect("re-decodes");
    assert_eq!(again, a);
});
