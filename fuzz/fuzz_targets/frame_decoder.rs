//! FrameCodec over arbitrary bytes delivered in arbitrary pieces: never panics, never returns
//! a frame above the limit, and every frame it returns re-encodes to the bytes it came from.
#![no_main]

use bytes::BytesMut;
use ellipsis_core::protocol::{Frame, FrameCodec, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

const MAX_PAYLOAD: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    // First byte: delivery piece size (1..=256), so partial headers and payloads are covered.
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece) + 1;
    let mut codec = FrameCodec::new(MAX_PAYLOAD);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() as u64 <= MAX_PAYLOAD);
                    let used = before - buf.len();
                    assert_eq!(used, HEADER_SIZE + frame.payload.len());
                    let mut out = BytesMut::new();
                    let f = Frame::new(frame.header, frame.payload.clone());
                    codec.encode(f, &mut out).expect("a decoded frame re-encodes");
                    assert_eq!(&out[..], &stream[consumed..consumed + used]);
                    consumed += used;
                }
                Ok(None) => break,
                // A bad frame ends the connection: nothing after it is framed.
                Err(_) => return,
            }
        }
    }
});
