//! Deterministic simulation (filled in by the simulation issue).
