//! Storage. (Being written.)
