//! eblob-bench: the same workload on eblob, fjall and redb in one run.
fn main() {}
