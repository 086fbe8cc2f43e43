//! Counters exposed at `/metrics`. (Being written.)
