//! Eblob: an append-mostly blob storage engine.
