"""Database access: engine and sessions from settings, the tables, and migrations."""
