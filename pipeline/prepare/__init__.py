"""Prepare: discover songs, decode, resample, cut segments with lyrics, write shards."""
