//! Predictive warming (being built).
