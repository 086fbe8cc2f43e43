//! Models. (Being written.)
