"""Reading an EVM chain directly: the JSON-RPC reader, its endpoint, and what is built on it."""
