"""Running generated code: an isolated sandbox, executability tiers, and the env it runs in."""
