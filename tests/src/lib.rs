//! `ellipsis-tests`: a harness that runs real Ellipsis clusters in-process on 127.0.0.1 with
//! temporary directories. The integration tests live in `tests/tests/`, one binary.
