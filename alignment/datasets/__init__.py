"""The preference datasets shipped with Decoding Lab (JSON files; see README.md)."""
