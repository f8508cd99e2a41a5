//! Checkpoints on disk: the native CBOR format, `save_pytree` / `load_pytree`, durable atomic
//! saves, `AsyncManager` and `CheckpointManager` (issue 3).
