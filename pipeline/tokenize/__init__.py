"""Tokenize: read shards, run the tokenizer on actors, write token Parquet tables."""
