//! Test harnesses: real servers in-process on port 0, fixtures, wait_for helpers
