//! The chat application. (Being written.)
