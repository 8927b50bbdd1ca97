//! Copies the host files cchost reads into a tree that is itself a valid host root.
