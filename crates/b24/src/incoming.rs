//! Activity calls and app events as the portal sends them (being written).
