//! Rooms, bounded history, cursors and wake-ups. (Being written.)
