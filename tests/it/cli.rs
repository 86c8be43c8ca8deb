//! CLI end to end.
