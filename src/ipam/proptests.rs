//! Model-based property test (next commit).
