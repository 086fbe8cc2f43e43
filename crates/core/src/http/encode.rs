//! Response encoding. (Being written.)
