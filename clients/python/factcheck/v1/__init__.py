"""Generated at build time from proto/factcheck/v1/factcheck.proto."""
