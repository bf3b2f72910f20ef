"""The Redis side: key schema, the background writer, and the reader the audit uses."""
