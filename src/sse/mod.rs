//! Server-Sent Events decoding and encoding (being written).
