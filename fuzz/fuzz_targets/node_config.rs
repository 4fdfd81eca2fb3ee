//! The node's TOML config parser and validator: any text is a config or a typed error, never a
//! panic; an accepted config validates again (parse and validate agree).
#![no_main]

use ellipsis_node::config::NodeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = NodeConfig::parse(text) {
        c.validate().expect("a parsed config is valid");
    }
});
