//! translate (work in progress)
