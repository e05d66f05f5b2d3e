"""Eviction and prefetch policies, one per file, registered by name (used unchanged by eval/ and runtime/)."""
