//! sse (work in progress)
