//! Format-preserving YAML scalar edits (in progress).
